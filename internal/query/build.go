package query

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/annotated-data/pipeline/internal/datetime"
)

// Caps are the types of fields in the indices a query runs on, as
// Elasticsearch's field capabilities tell them: field, then type, then the
// indices where the field has that type (nil when it has one type everywhere).
// A field no index maps is absent.
type Caps map[string]map[string][]string

// Notes say what an answer cannot show by itself.
type Notes struct {
	// Unknown are the fields q names that no index maps. As in Kibana, a
	// condition on one matches nothing; a client should say so, or a misspelt
	// field looks like "no data".
	Unknown []string
	// Warnings are conditions answered less exactly than asked, in words.
	Warnings []string
}

// Query builds the Elasticsearch query of e for fields of caps' types. Dates
// written without a zone, in comparisons, are in zone. A condition that cannot
// hold for its field's type (a word compared with a number, a trailing * on a
// number, a value for a field that holds objects) is an *Error with its
// position: Elasticsearch would fail the whole search on it.
func (e *Expr) Query(caps Caps, zone *time.Location) (Query, Notes, error) {
	if e == nil {
		return nil, Notes{}, nil
	}
	b := &builder{caps: caps, zone: zone}
	q, err := b.build(e.root, "")
	if err != nil {
		return nil, Notes{}, err
	}
	slices.Sort(b.notes.Unknown)
	b.notes.Unknown = slices.Compact(b.notes.Unknown)
	return q, b.notes, nil
}

type builder struct {
	caps  Caps
	zone  *time.Location
	notes Notes
}

// build returns the query of n, inside the nested path (or "" at the top).
func (b *builder) build(n node, inside string) (Query, error) {
	switch n := n.(type) {
	case join:
		parts := make([]any, len(n.parts))
		for i, p := range n.parts {
			q, err := b.build(p, inside)
			if err != nil {
				return nil, err
			}
			parts[i] = q
		}
		if n.or {
			return Query{"bool": Query{"should": parts, "minimum_should_match": 1}}, nil
		}
		return Query{"bool": Query{"filter": parts}}, nil
	case negation:
		q, err := b.build(n.n, inside)
		if err != nil {
			return nil, err
		}
		return Query{"bool": Query{"must_not": []any{q}}}, nil
	case nested:
		return b.nested(n, inside)
	case condition:
		q, err := b.condition(n)
		if err != nil {
			return nil, err
		}
		return b.withinElements(n.field, inside, q), nil
	}
	panic(fmt.Sprintf("query: unknown node %T", n))
}

// nested builds conditions in braces: all of them met by one element.
func (b *builder) nested(n nested, inside string) (Query, error) {
	types := b.caps[n.path]
	if len(types) == 0 {
		b.notes.Unknown = append(b.notes.Unknown, n.path)
	} else if !hasType(types, "nested", "object") {
		return nil, &Error{Pos: n.pos, Msg: fmt.Sprintf("%s is a %s, not objects: braces hold conditions on the fields of an array of objects, such as labels:{ label:person }", n.path, typeNames(types))}
	}
	inner, err := b.build(n.inner, n.path)
	if err != nil {
		return nil, err
	}
	var q Query
	switch {
	case len(types) > 0 && !hasType(types, "nested"):
		b.notes.Warnings = append(b.notes.Warnings, fmt.Sprintf("%s is not mapped as nested (ES_NESTED_FIELDS), so the conditions in braces may be met by different elements; replay its indices to remap them (docs/guarantees.md, Nested fields)", n.path))
		q = inner
	case len(types) == 0:
		q = eitherMapping(n.path, inner)
	case len(types["object"]) > 0:
		b.notes.Warnings = append(b.notes.Warnings, fmt.Sprintf("%s is not mapped as nested in %d older indices, where the conditions in braces may be met by different elements; replay them to remap them (docs/guarantees.md, Nested fields)", n.path, len(types["object"])))
		q = onIndices(types, nestedQuery(n.path, inner), inner)
	default:
		q = nestedQuery(n.path, inner)
	}
	return b.withinElements(n.path, inside, q), nil
}

// withinElements wraps q, a condition on field, in a nested query for each
// array of nested objects field is inside, below the path inside: a condition
// on labels.label outside braces is met by any one element of labels. Where
// such a path is a plain object in some indices, q applies there as it is.
func (b *builder) withinElements(field, inside string, q Query) Query {
	for i := len(field) - 1; i > len(inside); i-- {
		if field[i] != '.' {
			continue
		}
		path := field[:i]
		types := b.caps[path]
		if len(types) == 0 {
			q = eitherMapping(path, q)
			continue
		}
		if !hasType(types, "nested") {
			continue
		}
		if len(types["object"]) > 0 {
			q = onIndices(types, nestedQuery(path, q), q)
		} else {
			q = nestedQuery(path, q)
		}
	}
	return q
}

// eitherMapping is q on the elements of path however the first documents that
// have it map it, nested or as plain objects: no index maps it yet, and a
// follow keeps the query it started with while they come. Each branch matches
// nothing where path is mapped the other way: a nested query with
// ignore_unmapped ignores a path that is not nested, and no top-level document
// of an index where it is nested has path (q alone would, when it is a
// negation). On plain objects, conditions in braces then hold on documents
// that have path, as they do where it is nested.
func eitherMapping(path string, q Query) Query {
	return Query{"bool": Query{"should": []any{
		nestedQuery(path, q),
		Query{"bool": Query{"filter": []any{Query{"exists": Query{"field": path}}, q}}},
	}, "minimum_should_match": 1}}
}

func nestedQuery(path string, q Query) Query {
	// ignore_unmapped: an index without the path (or with it as a plain object)
	// has no such element, rather than failing the search.
	return Query{"nested": Query{"path": path, "query": q, "ignore_unmapped": true}}
}

// onIndices applies objectQ on the indices where the path is a plain object,
// and nestedQ on every other: where it is nested, and in the indices created
// after the query was built (a follow keeps its query across days), which the
// template maps as nested. A nested query with ignore_unmapped matches nothing
// where the path is not nested; objectQ, which may be a negation, must not
// meet an index where it is.
func onIndices(types map[string][]string, nestedQ, objectQ Query) Query {
	onObjects := Query{"bool": Query{"filter": []any{Query{"terms": Query{"_index": types["object"]}}, objectQ}}}
	return Query{"bool": Query{"should": []any{nestedQ, onObjects}, "minimum_should_match": 1}}
}

// The kinds of types a condition cares about.
const (
	kindKeyword = "keyword"
	kindText    = "text"
	kindNumber  = "number"
	kindDate    = "date"
	kindBool    = "boolean"
	kindIP      = "ip"
	kindObjects = "objects"
	kindOther   = "other"
)

func kindOf(typ string) string {
	switch typ {
	case "keyword", "constant_keyword", "wildcard", "version", "_index":
		return kindKeyword
	case "text", "match_only_text":
		return kindText
	case "long", "integer", "short", "byte", "double", "float", "half_float", "scaled_float", "unsigned_long":
		return kindNumber
	case "date", "date_nanos":
		return kindDate
	case "boolean", "ip":
		return typ
	case "object", "nested":
		return kindObjects
	}
	return kindOther
}

// condition builds one condition on a field, for each type it has.
func (b *builder) condition(c condition) (Query, error) {
	types := b.caps[c.field]
	if len(types) == 0 {
		b.notes.Unknown = append(b.notes.Unknown, c.field)
	}
	kinds := map[string]string{} // kind → a type of that kind, to name
	for t := range types {
		kinds[kindOf(t)] = t
	}
	v := c.value
	if c.op == ":" && v.wildcard && v.text == "" {
		if _, ok := types["nested"]; ok || len(types) == 0 {
			// An array of nested objects is in no field of the document itself
			// (and an unmapped field may become one while a follow runs).
			return Query{"bool": Query{"should": []any{
				nestedQuery(c.field, Query{"match_all": Query{}}),
				Query{"exists": Query{"field": c.field}},
			}, "minimum_should_match": 1}}, nil
		}
		return Query{"exists": Query{"field": c.field}}, nil
	}
	if _, ok := kinds[kindObjects]; ok {
		return nil, &Error{Pos: c.pos, Msg: fmt.Sprintf("%s holds objects: name one of their fields, as %s.label:value, or put conditions on one element in braces, as %s:{ label:value }", c.field, c.field, c.field)}
	}
	if c.op == ":" {
		switch {
		case v.wildcard:
			for k, t := range kinds {
				if k != kindKeyword && k != kindText {
					return nil, &Error{Pos: v.pos, Msg: fmt.Sprintf("a trailing * needs a field of words: %s is a %s", c.field, t)}
				}
			}
			return Query{"prefix": Query{c.field: Query{"value": v.text}}}, nil
		case v.quoted && kinds[kindText] != "":
			// A phrase: these words, in this order. On keywords, a phrase is the
			// whole value, as match has it.
			return Query{"multi_match": Query{"query": v.text, "fields": []string{c.field}, "type": "phrase", "lenient": true}}, nil
		}
		// lenient: a value that cannot be of the field's type (a word for a
		// number) matches nothing there, rather than failing the search.
		return Query{"match": Query{c.field: Query{"query": v.text, "lenient": true}}}, nil
	}
	value, err := b.comparable(c, kinds)
	if err != nil {
		return nil, err
	}
	return Query{"range": Query{c.field: Query{rangeOps[c.op]: value}}}, nil
}

var rangeOps = map[string]string{">": "gt", ">=": "gte", "<": "lt", "<=": "lte"}

// comparable checks that a comparison's value fits every type of its field,
// and returns it as Elasticsearch should read it: a date in RFC 3339, in UTC.
func (b *builder) comparable(c condition, kinds map[string]string) (string, error) {
	v := c.value
	value := v.text
	for _, k := range slices.Sorted(maps.Keys(kinds)) {
		t := kinds[k]
		wrong := func(what string) error {
			return &Error{Pos: v.pos, Msg: fmt.Sprintf("%s is a %s: %q is not %s", c.field, t, v.text, what)}
		}
		switch k {
		case kindNumber:
			if _, err := strconv.ParseFloat(v.text, 64); err != nil {
				return "", wrong("a number")
			}
		case kindDate:
			d, err := datetime.Parse(v.text, b.zone)
			if err != nil {
				return "", &Error{Pos: v.pos, Msg: fmt.Sprintf("%s is a date: %v", c.field, err)}
			}
			if len(kinds) == 1 {
				value = d.UTC().Format(time.RFC3339Nano)
			}
		case kindBool:
			if v.text != "true" && v.text != "false" {
				return "", wrong("true or false")
			}
		case kindIP:
			if _, err := netip.ParseAddr(v.text); err != nil {
				return "", wrong("an IP address")
			}
		case kindKeyword, kindText:
		default:
			return "", &Error{Pos: c.pos, Msg: fmt.Sprintf("%s is a %s: comparisons work on numbers, dates, words and IP addresses", c.field, t)}
		}
	}
	return value, nil
}

func hasType(types map[string][]string, names ...string) bool {
	for _, n := range names {
		if _, ok := types[n]; ok {
			return true
		}
	}
	return false
}

// typeNames lists a field's types, for a message.
func typeNames(types map[string][]string) string {
	return strings.Join(slices.Sorted(maps.Keys(types)), " or ")
}
