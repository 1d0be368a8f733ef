package api

import (
	"regexp"
	"testing"
	"time"

	"github.com/annotated-data/pipeline/internal/pipeline"
)

func TestACursorResumesOnlyTheRequestItCameFrom(t *testing.T) {
	c := cursors{key: []byte("deployment key")}
	req := request{Range: pipeline.Range{From: time.Unix(0, 0), To: time.Unix(3600, 0)}, follow: true}
	want := cursor{floor: 41, key: pipeline.Key{Time: 1234, Seq: 40}}
	s := c.encode(req, want)
	if !regexp.MustCompile(`^[A-Za-z0-9_-]{56}$`).MatchString(s) {
		t.Errorf("cursor %q is not 56 base64url characters, as openapi.json says", s)
	}
	if got, err := c.decode(req, s); err != nil || got != want {
		t.Errorf("decode = %+v, %v; want %+v", got, err, want)
	}

	other := req
	other.To = time.Unix(7200, 0)
	if _, err := c.decode(other, s); err != errOtherRequest {
		t.Errorf("a cursor of another range: %v, want errOtherRequest", err)
	}
	notFollowing := req
	notFollowing.follow = false
	if _, err := c.decode(notFollowing, s); err != errOtherRequest {
		t.Errorf("a follow's cursor on a plain stream: %v, want errOtherRequest", err)
	}
	altered := []byte(s)
	altered[20] ^= 1
	for name, bad := range map[string]string{
		"altered":          string(altered),
		"truncated":        s[:40],
		"not base64":       "!" + s[1:],
		"another key's":    cursors{key: []byte("another deployment")}.encode(req, want),
		"empty":            "",
		"a plain sequence": "40",
	} {
		if _, err := c.decode(req, bad); err != errForeignCursor {
			t.Errorf("%s cursor: %v, want errForeignCursor", name, err)
		}
	}
}
