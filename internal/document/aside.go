package document

import (
	"bytes"
	"encoding/json"
	"regexp"
	"slices"
	"strings"
)

// AsideKey holds the members of a message that its index's mapping could not take:
// their names, searchable, and their JSON as one string that nothing maps. A
// string fits any index, even one whose mapping predates the template, so a
// document with its conflicting members set aside is always accepted, and Restore
// serves it exactly as it was published.
const AsideKey = "@unindexed"

// asideMapping is how the index template maps AsideKey: what SetAside writes
// must fit it, whatever else the index holds.
var asideMapping = map[string]any{"properties": map[string]any{
	"fields": map[string]any{"type": "keyword"},
	"source": map[string]any{"type": "keyword", "index": false, "doc_values": false},
}}

// AsideMapping returns the index template's mapping of AsideKey.
func AsideMapping() map[string]any { return asideMapping }

// aside is AsideKey's value.
type aside struct {
	Fields []string `json:"fields"`
	Source string   `json:"source"` // a JSON object of the members set aside, as published
}

// refusedField finds the field a mapping refusal names, in the forms Elasticsearch
// writes them: "failed to parse field [a.b] of type [long]", "object mapping for
// [a] tried to parse field [a] as object", "mapper [a] cannot be changed from type
// [long] to [ObjectMapper]", "… due to object field [a.b.c]", "Field [_id] is a
// metadata field".
var refusedField = regexp.MustCompile(`(?:failed to parse field|object mapping for|mapper|due to object field|Field|non object mapping|for field) \[([^\]]+)\]`)

// SetAside returns body, a document Build made, with the members that the store's
// refusal (its reason, as Elasticsearch wrote it) names moved under AsideKey, to
// be sent again. When the refusal names no member, or names one already set
// aside, it moves every member of the message, so that what is left is only what
// the pipeline writes, which every index takes. It reports false when nothing is
// left to move: the refusal is not about the message's own fields.
func SetAside(body []byte, refusal string) ([]byte, bool) {
	var (
		held    aside
		heldAt  [2]int
		members []member
	)
	ok := topLevel(body, func(key, value []byte, start, end int) {
		switch k := string(key); k {
		case AsideKey:
			json.Unmarshal(value, &held) // written by an earlier SetAside
			heldAt = [2]int{start, end}
		case TimestampKey, OriginKey, OriginalTimestampKey:
		default:
			members = append(members, member{key: k, value: value, start: start, end: end})
		}
	})
	if !ok || len(members) == 0 {
		return nil, false
	}
	pick := func(keep func(member) bool) []member {
		return slices.DeleteFunc(slices.Clone(members), func(mb member) bool { return !keep(mb) })
	}
	move := members
	if m := refusedField.FindStringSubmatch(refusal); m != nil {
		if named := pick(func(mb member) bool { return related(mb.key, m[1]) }); len(named) > 0 {
			move = named
		}
	} else if bad := pick(func(mb member) bool { return !fieldName(mb.key) || hasBadName(mb.value) }); len(bad) > 0 {
		// A refusal of a name ("field name cannot be an empty string") does not
		// say where the name is.
		move = bad
	}

	// The members set aside so far, then these, as one JSON object of the bytes
	// the producer sent.
	src := []byte(strings.TrimSuffix(held.Source, "}"))
	if len(src) == 0 {
		src = []byte{'{'}
	}
	extents := make([][2]int, 0, len(move)+1)
	for _, mb := range move {
		if len(src) > 1 {
			src = append(src, ',')
		}
		src = append(src, body[mb.start:mb.end]...)
		held.Fields = append(held.Fields, mb.key)
		extents = append(extents, [2]int{mb.start, mb.end})
	}
	src = append(src, '}')
	held.Source = string(src)
	if heldAt != [2]int{} {
		extents = append(extents, heldAt)
		slices.SortFunc(extents, func(a, b [2]int) int { return a[0] - b[0] })
	}

	encoded, _ := json.Marshal(held) // strings only: cannot fail
	rest := withoutMembers(body, extents)
	out := make([]byte, 0, len(rest)+len(encoded)+len(AsideKey)+4)
	out = append(out, rest[:len(rest)-1]...) // drop the closing brace
	if !bytes.Equal(bytes.TrimRight(out, " \t"), []byte("{")) {
		out = append(out, ',')
	}
	out = append(out, `"`+AsideKey+`":`...)
	out = append(out, encoded...)
	return append(out, '}'), true
}

type member struct {
	key        string
	value      []byte
	start, end int
}

// related reports whether a member named key holds the field at path, or is held
// by it: Elasticsearch reads {"a.b":1} as {"a":{"b":1}}, so a refusal of field
// [a] can be about a member "a.b", and one of [a.b] about a member "a".
func related(key, path string) bool {
	return key == path || strings.HasPrefix(path, key+".") || strings.HasPrefix(key, path+".")
}

// fieldName reports whether Elasticsearch takes key as a field name: not empty
// nor blank, and no empty part between dots (a dot at the end it ignores).
func fieldName(key string) bool {
	return strings.TrimSpace(key) != "" && !strings.HasPrefix(key, ".") && !strings.Contains(key, "..")
}

// hasBadName reports whether value has an object inside with a key that is no
// field name.
func hasBadName(value []byte) bool {
	var v any
	if json.Unmarshal(value, &v) != nil {
		return false
	}
	var bad func(v any) bool
	bad = func(v any) bool {
		switch t := v.(type) {
		case map[string]any:
			for k, e := range t {
				if !fieldName(k) || bad(e) {
					return true
				}
			}
		case []any:
			return slices.ContainsFunc(t, bad)
		}
		return false
	}
	return bad(v)
}

// asideMarker is how AsideKey appears in a stored document: a document without
// it needs no restoring, which a search for these bytes tells at little cost. (Not
// with the opening quote: a search for a first byte as common in JSON as a quote
// took seven times as long.)
var asideMarker = []byte(AsideKey + `"`)

// Restore returns a stored document as its message was published: the members
// SetAside moved under AsideKey are put back at the top level, and AsideKey is
// dropped. When fields is not empty (a request for some fields only), a member is
// put back if one of fields names it, a field inside it, or matches it with
// wildcards. Any other document is returned as it is.
func Restore(doc []byte, fields []string) []byte {
	if !bytes.Contains(doc, asideMarker) {
		return doc
	}
	var (
		held   aside
		heldAt [2]int
		found  bool
	)
	ok := topLevel(doc, func(key, value []byte, start, end int) {
		if string(key) == AsideKey && json.Unmarshal(value, &held) == nil {
			heldAt, found = [2]int{start, end}, true
		}
	})
	if !ok || !found {
		return doc
	}
	var back [][]byte
	topLevel([]byte(held.Source), func(key, _ []byte, start, end int) {
		if len(fields) == 0 || wanted(string(key), fields) {
			back = append(back, []byte(held.Source[start:end]))
		}
	})
	rest := withoutMembers(doc, [][2]int{heldAt})
	out := make([]byte, 0, len(rest)+len(held.Source))
	out = append(out, rest[:len(rest)-1]...)
	for _, m := range back {
		if !bytes.Equal(bytes.TrimRight(out, " \t"), []byte("{")) {
			out = append(out, ',')
		}
		out = append(out, m...)
	}
	return append(out, '}')
}

// wanted reports whether a request for fields includes the member named key, as
// Elasticsearch's source filtering would. A field inside the member brings the
// whole member back: its parts cannot be told apart without decoding it.
func wanted(key string, fields []string) bool {
	for _, f := range fields {
		if related(key, f) || wildcardMatch(f, key) {
			return true
		}
	}
	return false
}

// wildcardMatch matches name against pattern, in which * stands for any run of
// characters.
func wildcardMatch(pattern, name string) bool {
	if !strings.Contains(pattern, "*") {
		return pattern == name
	}
	parts := strings.Split(pattern, "*")
	if !strings.HasPrefix(name, parts[0]) {
		return false
	}
	name = name[len(parts[0]):]
	for _, p := range parts[1 : len(parts)-1] {
		i := strings.Index(name, p)
		if i < 0 {
			return false
		}
		name = name[i+len(p):]
	}
	return strings.HasSuffix(name, parts[len(parts)-1])
}
