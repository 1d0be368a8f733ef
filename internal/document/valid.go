package document

// maxDepth is the deepest nesting of arrays and objects encoding/json accepts.
const maxDepth = 10000

// valid reports whether b is one JSON value with optional white space around it,
// exactly as json.Valid does (FuzzValid checks it against json.Valid): like it,
// it does not check that strings are valid UTF-8. It walks b once without the
// state machine of encoding/json's scanner, which took half of Build's time.
func valid(b []byte) bool { return scan(b, nil) }

// scan checks b as valid does, and on the same pass calls member with each member
// of b's outermost object, if b is one: its key as written between the quotes
// (escapes not undone), its value, and its extent in b, from the key's opening
// quote to the end of the value. So Build reads the members it needs without a
// second walk. A member passed before an error further on is still reported:
// use none of them unless scan returns true.
func scan(b []byte, member func(key, value []byte, start, end int)) bool {
	v := validator{b: b}
	i := skipSpace(b, 0)
	var ok bool
	if i < len(b) && b[i] == '{' {
		i, ok = v.object(i+1, 1, member)
	} else {
		i, ok = v.value(i, 0)
	}
	return ok && skipSpace(b, i) == len(b)
}

type validator struct{ b []byte }

// value checks the value starting at b[i] and returns the index after it.
func (v validator) value(i, depth int) (int, bool) {
	b := v.b
	if i >= len(b) {
		return i, false
	}
	switch c := b[i]; {
	case c == '{':
		return v.object(i+1, depth+1, nil)
	case c == '[':
		return v.array(i+1, depth+1)
	case c == '"':
		return v.str(i + 1)
	case c == '-' || c >= '0' && c <= '9':
		return v.number(i)
	case c == 't':
		return v.literal(i, "true")
	case c == 'f':
		return v.literal(i, "false")
	case c == 'n':
		return v.literal(i, "null")
	}
	return i, false
}

func (v validator) literal(i int, lit string) (int, bool) {
	if len(v.b)-i < len(lit) || string(v.b[i:i+len(lit)]) != lit {
		return i, false
	}
	return i + len(lit), true
}

// object checks the members after an opening brace at b[i-1], calling member (if
// not nil) with each, as scan describes.
func (v validator) object(i, depth int, member func(key, value []byte, start, end int)) (int, bool) {
	if depth > maxDepth {
		return i, false
	}
	b := v.b
	i = skipSpace(b, i)
	if i < len(b) && b[i] == '}' {
		return i + 1, true
	}
	for {
		if i >= len(b) || b[i] != '"' {
			return i, false
		}
		start := i
		var ok bool
		if i, ok = v.str(i + 1); !ok {
			return i, false
		}
		key := b[start+1 : i-1]
		i = skipSpace(b, i)
		if i >= len(b) || b[i] != ':' {
			return i, false
		}
		valueStart := skipSpace(b, i+1)
		if i, ok = v.value(valueStart, depth); !ok {
			return i, false
		}
		if member != nil {
			member(key, b[valueStart:i], start, i)
		}
		i = skipSpace(b, i)
		if i >= len(b) {
			return i, false
		}
		switch b[i] {
		case ',':
			i = skipSpace(b, i+1)
		case '}':
			return i + 1, true
		default:
			return i, false
		}
	}
}

// array checks the elements after an opening bracket at b[i-1].
func (v validator) array(i, depth int) (int, bool) {
	if depth > maxDepth {
		return i, false
	}
	b := v.b
	i = skipSpace(b, i)
	if i < len(b) && b[i] == ']' {
		return i + 1, true
	}
	for {
		var ok bool
		if i, ok = v.value(i, depth); !ok {
			return i, false
		}
		i = skipSpace(b, i)
		if i >= len(b) {
			return i, false
		}
		switch b[i] {
		case ',':
			i = skipSpace(b, i+1)
		case ']':
			return i + 1, true
		default:
			return i, false
		}
	}
}

// str checks the rest of a string whose opening quote is at b[i-1].
func (v validator) str(i int) (int, bool) {
	b := v.b
	for i < len(b) {
		switch c := b[i]; {
		case c == '"':
			return i + 1, true
		case c < 0x20:
			return i, false
		case c == '\\':
			if i+1 >= len(b) {
				return i, false
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if len(b)-i < 6 {
					return i, false
				}
				for _, h := range b[i+2 : i+6] {
					if !(h >= '0' && h <= '9' || h >= 'a' && h <= 'f' || h >= 'A' && h <= 'F') {
						return i, false
					}
				}
				i += 6
			default:
				return i, false
			}
		default:
			i++
		}
	}
	return i, false
}

// number checks -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? at b[i].
func (v validator) number(i int) (int, bool) {
	b := v.b
	if b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		i = digits(b, i)
	default:
		return i, false
	}
	if i < len(b) && b[i] == '.' {
		j := digits(b, i+1)
		if j == i+1 {
			return j, false
		}
		i = j
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		j := digits(b, i)
		if j == i {
			return j, false
		}
		i = j
	}
	return i, true
}

func digits(b []byte, i int) int {
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		i++
	}
	return i
}
