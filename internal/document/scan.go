package document

import (
	"bytes"
	"encoding/json"
)

// topLevel calls fn with the key and the raw value of each member of the JSON object
// obj, and the member's extent in obj (from its key's opening quote to the end
// of its value), in order, until fn returns false. obj must be a valid JSON object (checked
// with json.Valid first): this walks it once without decoding anything, which is what
// lets Build splice fields into the original bytes instead of re-encoding them.
// Keys are returned unescaped; fn must not keep them.
func topLevel(obj []byte, fn func(key, value []byte, start, end int) bool) {
	i := skipSpace(obj, 1) // past '{'
	for i < len(obj) && obj[i] == '"' {
		start := i
		end := endOfString(obj, i)
		key := obj[i+1 : end-1]
		if bytes.IndexByte(key, '\\') >= 0 {
			var k string
			json.Unmarshal(obj[i:end], &k) // valid JSON: cannot fail
			key = []byte(k)
		}
		i = skipSpace(obj, end)
		i = skipSpace(obj, i+1) // past ':'
		vend := endOfValue(obj, i)
		if !fn(key, obj[i:vend], start, vend) {
			return
		}
		i = skipSpace(obj, vend)
		if i < len(obj) && obj[i] == ',' {
			i = skipSpace(obj, i+1)
		}
	}
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// endOfString returns the index just past the string starting at b[i] == '"'.
func endOfString(b []byte, i int) int {
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return j + 1
		}
	}
	return len(b)
}

// endOfValue returns the index just past the value starting at b[i].
func endOfValue(b []byte, i int) int {
	switch b[i] {
	case '"':
		return endOfString(b, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				j = endOfString(b, j) - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1
				}
			}
		}
		return len(b)
	default: // number, true, false, null
		j := i
		for j < len(b) && b[j] != ',' && b[j] != '}' && b[j] != ' ' && b[j] != '\t' && b[j] != '\n' && b[j] != '\r' {
			j++
		}
		return j
	}
}

// withoutMembers returns obj without the members at the given extents (from
// topLevel, in order), and the commas that separated them, as a new slice.
func withoutMembers(obj []byte, extents [][2]int) []byte {
	out := make([]byte, 0, len(obj))
	prev := 0
	for _, e := range extents {
		start, end := e[0], e[1]
		// Drop the member with the comma after it, or, for the last member, the
		// comma before it.
		if next := skipSpace(obj, end); next < len(obj) && obj[next] == ',' {
			end = skipSpace(obj, next+1)
		} else if before := bytes.TrimRight(obj[prev:start], " \t\r\n"); len(before) > 0 && before[len(before)-1] == ',' {
			start = prev + len(before) - 1
		}
		out = append(out, obj[prev:start]...)
		prev = end
	}
	return append(out, obj[prev:]...)
}
