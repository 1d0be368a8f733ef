// Package query reads the q parameter: a subset of Kibana's query language
// (KQL), turned into an Elasticsearch query that runs in the cluster. It knows
// nothing of HTTP or of the cluster; the query it builds is plain data.
//
// The subset, with what each builds:
//
//	field:value          match (lenient: a value of another type matches nothing)
//	field:"a phrase"     the words in this order (exact, on a keyword)
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
//
// Reading happens in two steps: Parse checks the syntax and the limits, then
// Expr.Query builds the query against the fields' types in the mapping (see
// Caps), which decide what a condition may mean: a comparison of a number with
// a word, or a trailing * on a number, would make Elasticsearch fail the whole
// search, so they are refused here, with their position.
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

// Error is a q that cannot be read or cannot mean anything for the fields it
// names: Pos is the 1-based position, in characters, of the culprit.
type Error struct {
	Pos int
	Msg string
}

func (e *Error) Error() string { return fmt.Sprintf("q, at character %d: %s", e.Pos, e.Msg) }

// Expr is a q that was read: what it asks, before it meets a mapping.
type Expr struct {
	root node
}

// The syntax tree. Conditions name fields by their full path: inside braces, the
// nested path and a dot come first.
type (
	node interface{}
	// join is "and" or "or" over its parts.
	join struct {
		or    bool
		parts []node
	}
	negation struct{ n node }
	// condition is field:value (op ":"), field:* (op ":", value.wildcard and
	// empty), or a comparison (op ">", ">=", "<" or "<=").
	condition struct {
		field string
		pos   int // of the field name
		op    string
		value token
	}
	// nested requires inner of one element of the objects under path.
	nested struct {
		path  string
		pos   int
		inner node
	}
)

// Parse reads q. An empty or blank q matches everything, and returns nil.
func Parse(q string) (*Expr, error) {
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
	root, err := p.or(p.condition)
	if err != nil {
		return nil, err
	}
	if t := p.peek(); t.kind != tEnd {
		return nil, p.unexpected(t, "and, or, or the end")
	}
	return &Expr{root: root}, nil
}

// Fields are the fields e names, and every object they are inside (labels for
// labels.label): all that Query needs the types of.
func (e *Expr) Fields() []string {
	if e == nil {
		return nil
	}
	seen := map[string]bool{}
	var out []string
	add := func(f string) {
		for i := range f {
			if f[i] == '.' && !seen[f[:i]] {
				seen[f[:i]] = true
				out = append(out, f[:i])
			}
		}
		if !seen[f] {
			seen[f] = true
			out = append(out, f)
		}
	}
	walk(e.root, func(n node) {
		switch n := n.(type) {
		case condition:
			add(n.field)
		case nested:
			add(n.path)
		}
	})
	return out
}

// walk calls fn with n and everything under it.
func walk(n node, fn func(node)) {
	fn(n)
	switch n := n.(type) {
	case join:
		for _, p := range n.parts {
			walk(p, fn)
		}
	case negation:
		walk(n.n, fn)
	case nested:
		walk(n.inner, fn)
	}
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
func (p *parser) or(operand func() (node, error)) (node, error) {
	return p.joined(tOr, func() (node, error) { return p.joined(tAnd, func() (node, error) { return p.not(operand) }) })
}

// joined reads operands joined by the keyword kind.
func (p *parser) joined(kind tokenKind, operand func() (node, error)) (node, error) {
	first, err := operand()
	if err != nil {
		return nil, err
	}
	parts := []node{first}
	for p.peek().kind == kind {
		p.next()
		n, err := operand()
		if err != nil {
			return nil, err
		}
		parts = append(parts, n)
	}
	if len(parts) == 1 {
		return first, nil
	}
	return join{or: kind == tOr, parts: parts}, nil
}

func (p *parser) not(operand func() (node, error)) (node, error) {
	if p.peek().kind != tNot {
		return p.group(operand)
	}
	p.next()
	n, err := p.not(operand)
	if err != nil {
		return nil, err
	}
	return negation{n}, nil
}

// group reads an operand, or an expression of them in parentheses.
func (p *parser) group(operand func() (node, error)) (node, error) {
	if p.peek().kind != tOpen {
		return operand()
	}
	open := p.next()
	if err := p.enter(open); err != nil {
		return nil, err
	}
	n, err := p.or(operand)
	if err != nil {
		return nil, err
	}
	if t := p.next(); t.kind != tClose {
		return nil, p.unexpected(t, "a closing parenthesis for the one at character "+fmt.Sprint(open.pos))
	}
	p.depth--
	return n, nil
}

func (p *parser) enter(t token) error {
	if p.depth++; p.depth > MaxDepth {
		return &Error{Pos: t.pos, Msg: fmt.Sprintf("nested deeper than %d parentheses and braces", MaxDepth)}
	}
	return nil
}

// condition reads one condition on a field.
func (p *parser) condition() (node, error) {
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
		return condition{field: field, pos: t.pos, op: op.text, value: v}, nil
	case tEnd, tAnd, tOr, tClose, tBraceClose:
		return nil, &Error{Pos: t.pos, Msg: fmt.Sprintf("%s has no field: write field:%s (a search of every field is not supported)", t.describe(), t.text)}
	default:
		return nil, p.unexpected(op, ": or a comparison (>, >=, <, <=)")
	}
	switch p.peek().kind {
	case tBrace:
		return p.nested(field, t.pos)
	case tOpen:
		return p.group(func() (node, error) { return p.value(field, t.pos) })
	}
	return p.value(field, t.pos)
}

// nested reads the conditions in braces after field: and requires them of one
// element of the array of objects field holds.
func (p *parser) nested(field string, pos int) (node, error) {
	open := p.next()
	if err := p.enter(open); err != nil {
		return nil, err
	}
	outer := p.prefix
	p.prefix = field + "."
	inner, err := p.or(p.condition)
	if err != nil {
		return nil, err
	}
	p.prefix = outer
	if t := p.next(); t.kind != tBraceClose {
		return nil, p.unexpected(t, "a closing brace for the one at character "+fmt.Sprint(open.pos))
	}
	p.depth--
	return nested{path: field, pos: pos, inner: inner}, nil
}

// value reads one value of field.
func (p *parser) value(field string, pos int) (node, error) {
	t := p.next()
	if t.kind != tWord {
		return nil, p.unexpected(t, "a value")
	}
	if err := p.count(t); err != nil {
		return nil, err
	}
	return condition{field: field, pos: pos, op: ":", value: t}, nil
}

// count counts one more condition, whose value is t.
func (p *parser) count(t token) error {
	if p.clauses++; p.clauses > MaxClauses {
		return &Error{Pos: t.pos, Msg: fmt.Sprintf("more than %d conditions", MaxClauses)}
	}
	return nil
}

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
