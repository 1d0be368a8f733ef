package api

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"strings"

	"github.com/annotated-data/pipeline/internal/pipeline"
)

// cursor is a position in a document stream, as the client gets it back in an
// SSE event's id (or an NDJSON cursor record), to resume after.
type cursor struct {
	// live: every document of the range with @nats.seq ≤ key.Seq has been sent.
	// Otherwise the history, ordered by key, has been sent up to key, and floor is
	// the sequence the history stops at (a follow's), or 0.
	live  bool
	floor uint64
	key   pipeline.Key
}

// Layout: version, flags, request digest, floor, time, seq, MAC.
const (
	cursorVersion = 1
	cursorBody    = 1 + 1 + 8 + 8 + 8 + 8
	cursorMAC     = 8
	flagLive      = 1
)

// cursors encodes and checks cursors. They are opaque to clients and tied to
// the request they were issued for; the MAC makes a cursor that was altered or
// made up fail with a clear error instead of resuming somewhere arbitrary. A
// cursor grants nothing the request itself does not.
type cursors struct{ key []byte }

var (
	errForeignCursor = errors.New("is not a cursor this API issued: pass the id of the last event received, unchanged")
	errOtherRequest  = errors.New("is a cursor of another request: resume with the same start_date, end_date, q, fields, order and follow")
)

func (c cursors) encode(r request, cur cursor) string {
	b := make([]byte, cursorBody, cursorBody+sha256.Size)
	b[0] = cursorVersion
	if cur.live {
		b[1] = flagLive
	}
	copy(b[2:10], requestDigest(r))
	binary.BigEndian.PutUint64(b[10:], cur.floor)
	binary.BigEndian.PutUint64(b[18:], uint64(cur.key.Time))
	binary.BigEndian.PutUint64(b[26:], cur.key.Seq)
	b = append(b, c.mac(b[:cursorBody])[:cursorMAC]...)
	return base64.RawURLEncoding.EncodeToString(b)
}

func (c cursors) decode(r request, s string) (cursor, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(b) != cursorBody+cursorMAC || b[0] != cursorVersion ||
		!hmac.Equal(b[cursorBody:], c.mac(b[:cursorBody])[:cursorMAC]) {
		return cursor{}, errForeignCursor
	}
	if !hmac.Equal(b[2:10], requestDigest(r)) {
		return cursor{}, errOtherRequest
	}
	return cursor{
		live:  b[1]&flagLive != 0,
		floor: binary.BigEndian.Uint64(b[10:]),
		key:   pipeline.Key{Time: int64(binary.BigEndian.Uint64(b[18:])), Seq: binary.BigEndian.Uint64(b[26:])},
	}, nil
}

func (c cursors) mac(b []byte) []byte {
	m := hmac.New(sha256.New, c.key)
	m.Write(b)
	return m.Sum(nil)
}

// requestDigest identifies what a request selects and in which order, so that a
// cursor only resumes the stream it came from. The encoding (SSE or NDJSON) may
// differ: the documents and their order do not.
func requestDigest(r request) []byte {
	h := sha256.New()
	var b [8]byte
	for _, n := range []int64{r.From.UnixNano(), r.To.UnixNano(), int64(r.Order)} {
		binary.BigEndian.PutUint64(b[:], uint64(n))
		h.Write(b[:])
	}
	if r.follow {
		h.Write([]byte{1})
	} else {
		h.Write([]byte{0})
	}
	h.Write([]byte(strings.Join(r.Fields, "\x00")))
	if r.q != "" {
		// Only when there is one, so that cursors issued before q existed
		// still resume. A field name cannot hold a NUL: nothing is ambiguous.
		h.Write([]byte("\x00q\x00" + r.q))
	}
	return h.Sum(nil)[:8]
}
