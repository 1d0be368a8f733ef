package document

import (
	"bytes"
	"encoding/json"
)

// topLevel checks obj as valid does, and calls fn with the key and the raw value of
// each member of obj's outermost object, and the member's extent in obj (from
// its key's opening quote to the end of its value), in order. It walks obj once
// without decoding anything, which is what lets Build splice fields into the
// original bytes instead of re-encoding them. Keys are passed unescaped; fn must
// not keep them. Members are only meaningful if it returns true.
func topLevel(obj []byte, fn func(key, value []byte, start, end int)) bool {
	return scan(obj, func(key, value []byte, start, end int) {
		if bytes.IndexByte(key, '\\') >= 0 {
			var k string
			json.Unmarshal(obj[start:start+len(key)+2], &k) // a valid string: cannot fail
			key = []byte(k)
		}
		fn(key, value, start, end)
	})
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
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
