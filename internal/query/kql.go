// Package query reads the q parameter: a subset of Kibana's query language
// (KQL), turned into an Elasticsearch query that runs in the cluster. It knows
// nothing of HTTP or of the cluster; the query it builds is plain data.
//
// The subset, with what each builds:
//
//	field:value          match (lenient: a value of another type matches nothing)
//	field:"a phrase"     match_phrase
//	field:cam-*          prefix: a * only at the end of a value
//	field:*              exists
//	field:(a or b)       the same field, for several values; and, not, parentheses
//	field >= 10          range, with >, >=, < and <=, on numbers, dates or strings
//	labels:{ label:person and confidence >= 0.8 }
//	                     nested: every condition within one element of labels
//	not, and, or, ( )    bool; "and" binds tighter than "or"; case does not matter
//
// A value without a field, a wildcard anywhere but at the end of a value, a
// regular expression, and anything else is refused with the position of the
// first character that could not be read.
package query

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// Limits keep one request from asking the cluster for an expensive query.
const (
	MaxLength  = 2000 // characters of q
	MaxDepth   = 20   // parentheses and nested braces, one inside the other
	MaxClauses = 200  // conditions on a field
)

// Query is an Elasticsearch query, ready to be encoded as JSON.
type Query = map[string]any

// Error is a q that cannot be read: Pos is the 1-based position, in characters,
// where reading stopped.
type Error struct {
	Pos int
	Msg string
}

func (e *Error) Error() string { return fmt.Sprintf("q, at character %d: %s", e.Pos, e.Msg) }

// Parse reads q and returns its query. An empty or blank q matches everything,
// and returns nil.
func Parse(q string) (Query, error) {
	if n := utf8.RuneCountInString(q); n > MaxLength {
		return nil, &Error{Pos: MaxLength + 1, Msg: fmt.Sprintf("longer than %d characters", MaxLength)}
	}
	if !utf8.ValidString(q) {
		return nil, &Error{Pos: 1, Msg: "not valid UTF-8"}
	}
	toks, err := lex(q)
	if err != nil {
		return nil, err
	}
	if len(toks) == 1 { // only the end
		return nil, nil
	}
	p := &parser{toks: toks}
	out, err := p.or(p.condition)
	if err != nil {
		return nil, err
	}
	if t := p.peek(); t.kind != tEnd {
		return nil, p.unexpected(t, "and, or, or the end")
	}
	return out, nil
}

type parser struct {
	toks    []token
	i       int
	depth   int
	clauses int
	prefix  string // the nested path the fields are inside, with its dot
}

func (p *parser) peek() token { return p.toks[p.i] }
func (p *parser) next() token { t := p.toks[p.i]; p.i++; return t }

func (p *parser) unexpected(t token, want string) error {
	if t.kind == tEnd {
		return &Error{Pos: t.pos, Msg: "the query ends where " + want + " was expected"}
	}
	return &Error{Pos: t.pos, Msg: fmt.Sprintf("%s where %s was expected", t.describe(), want)}
}

// or reads operands joined by "or", each read by operand (conditions, or the
// values of one field).
func (p *parser) or(operand func() (Query, error)) (Query, error) {
	return p.joined(tOr, func() (Query, error) { return p.joined(tAnd, func() (Query, error) { return p.not(operand) }) })
}

// joined reads operands joined by the keyword kind.
func (p *parser) joined(kind tokenKind, operand func() (Query, error)) (Query, error) {
	first, err := operand()
	if err != nil {
		return nil, err
	}
	parts := []any{first}
	for p.peek().kind == kind {
		p.next()
		q, err := operand()
		if err != nil {
			return nil, err
		}
		parts = append(parts, q)
	}
	switch {
	case len(parts) == 1:
		return first, nil
	case kind == tAnd:
		return Query{"bool": Query{"filter": parts}}, nil
	default:
		return Query{"bool": Query{"should": parts, "minimum_should_match": 1}}, nil
	}
}

func (p *parser) not(operand func() (Query, error)) (Query, error) {
	if p.peek().kind != tNot {
		return p.group(operand)
	}
	p.next()
	q, err := p.not(operand)
	if err != nil {
		return nil, err
	}
	return Query{"bool": Query{"must_not": []any{q}}}, nil
}

// group reads an operand, or an expression of them in parentheses.
func (p *parser) group(operand func() (Query, error)) (Query, error) {
	if p.peek().kind != tOpen {
		return operand()
	}
	open := p.next()
	if err := p.enter(open); err != nil {
		return nil, err
	}
	q, err := p.or(operand)
	if err != nil {
		return nil, err
	}
	if t := p.next(); t.kind != tClose {
		return nil, p.unexpected(t, "a closing parenthesis for the one at character "+fmt.Sprint(open.pos))
	}
	p.depth--
	return q, nil
}

func (p *parser) enter(t token) error {
	if p.depth++; p.depth > MaxDepth {
		return &Error{Pos: t.pos, Msg: fmt.Sprintf("nested deeper than %d parentheses and braces", MaxDepth)}
	}
	return nil
}

// condition reads one condition on a field.
func (p *parser) condition() (Query, error) {
	t := p.next()
	if t.kind != tWord {
		return nil, p.unexpected(t, "a field name")
	}
	if t.quoted || t.wildcard {
		return nil, &Error{Pos: t.pos, Msg: "a field name was expected: write field:value"}
	}
	if err := fieldName(t); err != nil {
		return nil, err
	}
	field := p.prefix + t.text
	op := p.next()
	switch op.kind {
	case tColon:
	case tRange:
		v := p.next()
		if v.kind != tWord || v.wildcard {
			return nil, p.unexpected(v, "a number, a date or a string after "+op.text)
		}
		if err := p.count(v); err != nil {
			return nil, err
		}
		return Query{"range": Query{field: Query{rangeOps[op.text]: v.text}}}, nil
	case tEnd, tAnd, tOr, tClose, tBraceClose:
		return nil, &Error{Pos: t.pos, Msg: fmt.Sprintf("%s has no field: write field:%s (a search of every field is not supported)", t.describe(), t.text)}
	default:
		return nil, p.unexpected(op, ": or a comparison (>, >=, <, <=)")
	}
	switch p.peek().kind {
	case tBrace:
		return p.nested(field)
	case tOpen:
		return p.group(func() (Query, error) { return p.value(field) })
	}
	return p.value(field)
}

// nested reads the conditions in braces after field: and requires them of one
// element of the array of objects field holds.
func (p *parser) nested(field string) (Query, error) {
	open := p.next()
	if err := p.enter(open); err != nil {
		return nil, err
	}
	outer := p.prefix
	p.prefix = field + "."
	q, err := p.or(p.condition)
	if err != nil {
		return nil, err
	}
	p.prefix = outer
	if t := p.next(); t.kind != tBraceClose {
		return nil, p.unexpected(t, "a closing brace for the one at character "+fmt.Sprint(open.pos))
	}
	p.depth--
	return Query{"nested": Query{"path": field, "query": q, "ignore_unmapped": true}}, nil
}

// value reads one value of field and what it matches.
func (p *parser) value(field string) (Query, error) {
	t := p.next()
	if t.kind != tWord {
		return nil, p.unexpected(t, "a value")
	}
	if err := p.count(t); err != nil {
		return nil, err
	}
	switch {
	case t.wildcard && t.text == "":
		return Query{"exists": Query{"field": field}}, nil
	case t.wildcard:
		return Query{"prefix": Query{field: Query{"value": t.text}}}, nil
	case t.quoted:
		return Query{"match_phrase": Query{field: Query{"query": t.text}}}, nil
	}
	return Query{"match": Query{field: Query{"query": t.text, "lenient": true}}}, nil
}

// count counts one more condition, whose value is t.
func (p *parser) count(t token) error {
	if p.clauses++; p.clauses > MaxClauses {
		return &Error{Pos: t.pos, Msg: fmt.Sprintf("more than %d conditions", MaxClauses)}
	}
	return nil
}

var rangeOps = map[string]string{">": "gt", ">=": "gte", "<": "lt", "<=": "lte"}

// fieldName checks a field name: letters, digits and _ @ . -, as the fields
// parameter takes, and no empty part between dots.
func fieldName(t token) error {
	for i, r := range t.text {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("_@.-", r)) {
			return &Error{Pos: t.pos + utf8.RuneCountInString(t.text[:i]), Msg: fmt.Sprintf("field name %q may hold only letters, digits and _ @ . -", t.text)}
		}
	}
	if strings.HasPrefix(t.text, ".") || strings.HasSuffix(t.text, ".") || strings.Contains(t.text, "..") {
		return &Error{Pos: t.pos, Msg: fmt.Sprintf("field name %q has an empty part between dots", t.text)}
	}
	return nil
}
