package audit

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
)

// Range is a span of stream sequences, both ends included.
type Range struct {
	From uint64 `json:"from"`
	To   uint64 `json:"to"`
}

// Doubled is a sequence stored as more than one document.
type Doubled struct {
	Seq       uint64   `json:"seq"`
	Documents []string `json:"documents"` // index/id of each
}

// Report is what an audit found.
type Report struct {
	Stream    string `json:"stream"`
	Since     string `json:"since,omitempty"`
	Window    Range  `json:"window"`     // as asked, up to the last sequence held
	FirstHeld uint64 `json:"first_held"` // the first sequence the stream still holds
	LastHeld  uint64 `json:"last_held"`
	// BeyondStream is the part of the window the stream no longer holds (its
	// retention dropped it), which could not be audited. When the window was
	// given by time, which dropped sequences it held is unknown: it is every
	// sequence before the first held, from 1.
	BeyondStream *Range `json:"beyond_stream,omitempty"`
	// Audited is the part of the window compared, nil if none: the messages the
	// stream holds, up to the durable consumer's ack floor.
	Audited *Range `json:"audited,omitempty"`
	// NotYetIngested are messages of the window after the ack floor: the
	// webserver has not settled them yet, so they are not counted as missing.
	NotYetIngested int64 `json:"not_yet_ingested"`

	Messages           int64 `json:"messages"`            // held by the stream in Audited
	Indexed            int64 `json:"indexed"`             // sequences with at least one document
	DeadLettered       int64 `json:"dead_lettered"`       // sequences with a dead letter
	ProducerDuplicates int64 `json:"producer_duplicates"` // messages that repeated the Nats-Msg-Id of one indexed before
	Missing            int64 `json:"missing"`             // neither indexed nor dead-lettered nor a duplicate

	MissingRanges          []Range   `json:"missing_ranges"`
	IndexedTwice           []Doubled `json:"indexed_twice"`
	IndexedAndDeadLettered []uint64  `json:"indexed_and_dead_lettered"`
	// IndexedNotInStream counts documents whose message was deleted from the
	// stream after it was indexed: not a loss, and not counted as messages.
	IndexedNotInStream int64 `json:"indexed_not_in_stream"`

	// Requests counts the requests the audit made to Elasticsearch and NATS: it
	// grows with the problems found (and the producer duplicates), not with the
	// documents.
	Requests int `json:"requests"`
	// MissingSeqs are the missing sequences, one by one, for a repair.
	MissingSeqs []uint64 `json:"-"`
}

// Clean reports whether every message of the window is accounted for exactly once
// and the stream still holds the whole window.
func (r *Report) Clean() bool {
	return r.Missing == 0 && len(r.IndexedTwice) == 0 && len(r.IndexedAndDeadLettered) == 0 && r.BeyondStream == nil
}

// CleanAfterRepair reports whether replaying the missing sequences of r, of
// which replayed were read back and settled and unsettled were not, left the
// window clean. A missing sequence is repaired when its message is indexed, or
// found indexed already, or dead-lettered: found indexed is what the second of
// two missing sequences that share one id (a producer's repeated Nats-Msg-Id)
// meets once the first is indexed, and what the audit then calls a producer
// duplicate. The problems a replay does not touch must not have been there.
func (r *Report) CleanAfterRepair(replayed, unsettled int64) bool {
	return unsettled == 0 && replayed == r.Missing &&
		len(r.IndexedTwice) == 0 && len(r.IndexedAndDeadLettered) == 0 && r.BeyondStream == nil
}

// Replay re-ingests the messages of ranges and counts them: settled were
// indexed, found indexed already, or dead-lettered; unsettled were none of these.
type Replay func(ctx context.Context, ranges []Range) (settled, unsettled int64, err error)

// Repair replays the missing sequences of r and reports whether that left the
// window clean (CleanAfterRepair). With nothing missing there is nothing a
// replay could repair, and the window is as clean as it was.
func (r *Report) Repair(ctx context.Context, replay Replay) (clean bool, err error) {
	if r.Missing == 0 {
		return r.Clean(), nil
	}
	settled, unsettled, err := replay(ctx, r.MissingRanges)
	if err != nil {
		return false, fmt.Errorf("repair: %w", err)
	}
	return r.CleanAfterRepair(settled, unsettled), nil
}

// WriteJSON writes r as one JSON object, with "clean" added.
func (r *Report) WriteJSON(w io.Writer) error {
	type plain Report
	p := plain(*r)
	// Empty lists as [], not null: readers iterate them without a check.
	p.MissingRanges = nonNil(p.MissingRanges)
	p.IndexedTwice = nonNil(p.IndexedTwice)
	p.IndexedAndDeadLettered = nonNil(p.IndexedAndDeadLettered)
	return json.NewEncoder(w).Encode(struct {
		Clean bool `json:"clean"`
		*plain
	}{r.Clean(), &p})
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// WriteText writes r for a person.
func (r *Report) WriteText(w io.Writer) {
	fmt.Fprintf(w, "audit of stream %s, sequences %s", r.Stream, r.Window)
	if r.Since != "" {
		fmt.Fprintf(w, " (published since %s)", r.Since)
	}
	fmt.Fprintf(w, "; the stream holds %d-%d\n", r.FirstHeld, r.LastHeld)
	if b := r.BeyondStream; b != nil {
		if r.Since != "" {
			fmt.Fprintf(w, "  NOT AUDITED: messages published since %s may be among sequences %s, beyond the stream, which now begins at sequence %d\n", r.Since, b, r.FirstHeld)
		} else {
			fmt.Fprintf(w, "  NOT AUDITED: sequences %s are beyond the stream, which now begins at sequence %d\n", b, r.FirstHeld)
		}
	}
	if r.NotYetIngested > 0 {
		fmt.Fprintf(w, "  not yet ingested: %d messages after the durable consumer's ack floor\n", r.NotYetIngested)
	}
	audited := "nothing"
	if r.Audited != nil {
		audited = r.Audited.String()
	}
	fmt.Fprintf(w, "  audited:             %s\n", audited)
	fmt.Fprintf(w, "  messages:            %d\n", r.Messages)
	fmt.Fprintf(w, "  indexed:             %d\n", r.Indexed)
	fmt.Fprintf(w, "  dead-lettered:       %d\n", r.DeadLettered)
	fmt.Fprintf(w, "  producer duplicates: %d\n", r.ProducerDuplicates)
	fmt.Fprintf(w, "  missing:             %d%s\n", r.Missing, list(r.MissingRanges))
	fmt.Fprintf(w, "  indexed twice:       %d\n", len(r.IndexedTwice))
	for _, d := range r.IndexedTwice {
		fmt.Fprintf(w, "    %d: %s\n", d.Seq, strings.Join(d.Documents, ", "))
	}
	fmt.Fprintf(w, "  indexed and dead-lettered: %d%s\n", len(r.IndexedAndDeadLettered), list(ranges(r.IndexedAndDeadLettered)))
	if r.IndexedNotInStream > 0 {
		fmt.Fprintf(w, "  indexed, message since deleted from the stream: %d\n", r.IndexedNotInStream)
	}
	if r.Clean() {
		fmt.Fprintln(w, "clean")
	} else {
		fmt.Fprintln(w, "NOT CLEAN")
	}
}

// list writes ranges after a count, at most 50 of them.
func list(rs []Range) string {
	if len(rs) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString(" (")
	for i, r := range rs {
		if i == 50 {
			fmt.Fprintf(&b, ", … %d more ranges", len(rs)-50)
			break
		}
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(r.String())
	}
	b.WriteString(")")
	return b.String()
}
