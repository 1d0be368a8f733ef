//go:build integration

package e2e

import (
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/annotated-data/pipeline/internal/consumer"
	"github.com/annotated-data/pipeline/internal/testenv"
)

// The notices only hasten followers: with every one of them refused by NATS
// (the webserver's user may not publish them), a follower gets every document,
// once, from the polls.
func TestFollowersGetEveryDocumentWhenEveryNoticeIsDropped(t *testing.T) {
	t.Parallel()
	notices := consumer.SettledSubject("ANNOTATIONS", "webserver")
	ns := testenv.StartNATSWith(t, func(o *server.Options) {
		o.Users = []*server.User{
			{Username: "webserver", Password: "webserver-pw", Permissions: &server.Permissions{
				Publish: &server.SubjectPermission{Allow: []string{">"}, Deny: []string{notices}}}},
			{Username: "anyone"},
		}
		o.NoAuthUser = "anyone" // the test and the backend connect without credentials
	})
	h := newHarnessOn(t, ns)
	overheard, err := nats.Connect(ns.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer overheard.Close()
	heard, err := overheard.SubscribeSync(notices)
	if err != nil {
		t.Fatal(err)
	}
	overheard.Flush()

	h.startWebserver(map[string]string{"NATS_USER": "webserver", "NATS_PASSWORD": "webserver-pw"})
	base := followBackend(t, h, nil)
	from, end := time.Now().Add(-time.Minute), time.Now().Add(4*time.Second)
	r := newReceived()
	followed := make(chan error, 1)
	go func() {
		_, err := follow(h.ctx, base, rangeParams(from, &end), true, "", r)
		followed <- err
	}()
	newLivePublisher(t, h.ctx, h.js).frames(500, 250)
	if err := <-followed; err != nil || r.failure != "" {
		t.Fatalf("follow: %v %s", err, r.failure)
	}
	h.waitIngested(time.Minute)
	want := stored(t, h, base, from, end)
	if diff := sameDocuments(r.docs, want); diff != "" || len(want) != 500 {
		t.Errorf("the follow differs from getJsonStream's %d documents (want 500): %s", len(want), diff)
	}
	if len(r.repeats) > 0 {
		t.Errorf("%d documents came twice: %v", len(r.repeats), first(r.repeats))
	}
	if m, err := heard.NextMsg(10 * time.Millisecond); err == nil {
		t.Errorf("a notice got through (%v): the test proves nothing", m.Subject)
	}
}
