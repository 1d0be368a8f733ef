package query

import (
	"fmt"
	"strings"
	"unicode"
)

type tokenKind int

const (
	tEnd tokenKind = iota
	tWord
	tColon
	tRange
	tOpen
	tClose
	tBrace
	tBraceClose
	tAnd
	tOr
	tNot
)

type token struct {
	kind tokenKind
	text string // a word as unescaped, or an operator as written
	pos  int    // 1-based, in characters
	// quoted: the word was in double quotes. wildcard: it ended in an
	// unescaped *, which text leaves out.
	quoted, wildcard bool
}

func (t token) describe() string {
	switch t.kind {
	case tWord:
		return fmt.Sprintf("%q", t.text+map[bool]string{true: "*"}[t.wildcard])
	case tAnd, tOr, tNot:
		return "the keyword " + strings.ToLower(t.text)
	}
	return fmt.Sprintf("%q", t.text)
}

// special are the characters that end an unquoted word.
const special = `():<>{}"`

// lex splits q into tokens, ending with tEnd.
func lex(q string) ([]token, error) {
	rs := []rune(q)
	var out []token
	for i := 0; ; {
		for i < len(rs) && unicode.IsSpace(rs[i]) {
			i++
		}
		if i == len(rs) {
			return append(out, token{kind: tEnd, pos: i + 1}), nil
		}
		start, c := i, rs[i]
		switch {
		case strings.ContainsRune("(){}:", c):
			kind := map[rune]tokenKind{'(': tOpen, ')': tClose, '{': tBrace, '}': tBraceClose, ':': tColon}[c]
			out = append(out, token{kind: kind, text: string(c), pos: start + 1})
			i++
		case c == '<' || c == '>':
			i++
			if i < len(rs) && rs[i] == '=' {
				i++
			}
			out = append(out, token{kind: tRange, text: string(rs[start:i]), pos: start + 1})
		case c == '"':
			t, next, err := quoted(rs, i)
			if err != nil {
				return nil, err
			}
			out, i = append(out, t), next
		default:
			t, next, err := word(rs, i)
			if err != nil {
				return nil, err
			}
			out, i = append(out, t), next
		}
	}
}

// quoted reads the phrase whose opening quote is at rs[i].
func quoted(rs []rune, i int) (token, int, error) {
	start := i
	var b strings.Builder
	for i++; i < len(rs); i++ {
		switch rs[i] {
		case '\\':
			if i+1 < len(rs) {
				i++
				b.WriteRune(rs[i])
			}
		case '"':
			return token{kind: tWord, text: b.String(), pos: start + 1, quoted: true}, i + 1, nil
		default:
			b.WriteRune(rs[i])
		}
	}
	return token{}, 0, &Error{Pos: start + 1, Msg: "the quote opened here is never closed"}
}

// word reads the unquoted word at rs[i]: a field name, a value or a keyword. A
// backslash makes the next character part of the word, whatever it is.
func word(rs []rune, i int) (token, int, error) {
	start := i
	if rs[i] == '/' {
		return token{}, 0, &Error{Pos: start + 1, Msg: "regular expressions are not supported (they make the cluster read every term): use a value, a quoted phrase or a trailing *"}
	}
	var b strings.Builder
	star := -1 // position of an unescaped *, if any
	for ; i < len(rs) && !unicode.IsSpace(rs[i]) && !strings.ContainsRune(special, rs[i]); i++ {
		switch rs[i] {
		case '\\':
			if i+1 < len(rs) {
				i++
				b.WriteRune(rs[i])
			}
			continue
		case '*':
			if star < 0 {
				star = i
			}
			continue
		}
		if star >= 0 {
			return token{}, 0, &Error{Pos: star + 1, Msg: "a * may only end a value: a leading or inner wildcard would make the cluster read every term, so it is refused"}
		}
		b.WriteRune(rs[i])
	}
	text := b.String()
	t := token{kind: tWord, text: text, pos: start + 1, wildcard: star >= 0}
	if star >= 0 && star != i-1 {
		return token{}, 0, &Error{Pos: star + 1, Msg: "a * may only end a value, once"}
	}
	if !t.wildcard && rs[start] != '\\' {
		switch strings.ToLower(text) {
		case "and":
			t.kind = tAnd
		case "or":
			t.kind = tOr
		case "not":
			t.kind = tNot
		}
	}
	return t, i, nil
}
