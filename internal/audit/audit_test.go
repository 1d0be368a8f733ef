package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/annotated-data/pipeline/internal/pipeline"
)

// fakeStream holds messages by sequence: the producer's Nats-Msg-Id of each ("" for
// none), and the dead letters.
type fakeStream struct {
	msgIDs  map[uint64]string
	first   uint64
	last    uint64
	deleted []uint64
	letters map[uint64]int
	settled uint64 // the durable's ack floor; 0: no durable
	gets    int    // messages read one by one
	// trimmedSince: messages published since the window's start may have been
	// dropped already.
	trimmedSince bool
}

func (s *fakeStream) State(context.Context) (State, error) {
	return State{First: s.first, Last: s.last, Deleted: s.deleted, Settled: s.settled, HasDurable: s.settled > 0}, nil
}
func (s *fakeStream) Since(context.Context, time.Time) (uint64, bool, error) {
	return s.first, s.trimmedSince, nil
}
func (s *fakeStream) DeadLetters(context.Context) (map[uint64]int, error) { return s.letters, nil }
func (s *fakeStream) DocumentIDs(_ context.Context, seqs []uint64) (map[uint64]string, error) {
	out := map[uint64]string{}
	for _, seq := range seqs {
		s.gets++
		if id, ok := s.msgIDs[seq]; ok && !contains(s.deleted, seq) && seq >= s.first {
			out[seq] = id
			if id == "" {
				out[seq] = fmt.Sprintf("S-%d", seq)
			}
		}
	}
	return out, nil
}

// fakeIndex holds documents.
type fakeIndex struct {
	docs    []pipeline.Copy
	buckets int // histogram requests
	leaves  int // composite requests
}

func (x *fakeIndex) SeqBuckets(_ context.Context, _ string, ranges []pipeline.SeqRange, width, offset uint64) ([]pipeline.SeqBucket, error) {
	x.buckets++
	byStart := map[uint64]*pipeline.SeqBucket{}
	for _, d := range x.docs {
		if !in(ranges, d.Seq) {
			continue
		}
		start := (d.Seq-offset)/width*width + offset
		b := byStart[start]
		if b == nil {
			b = &pipeline.SeqBucket{From: start, To: start + width - 1}
			byStart[start] = b
		}
		b.Documents++
		b.SeqSum += d.Seq
	}
	var out []pipeline.SeqBucket
	for _, b := range byStart {
		out = append(out, *b)
	}
	return out, nil
}
func (x *fakeIndex) SeqCounts(_ context.Context, _ string, ranges []pipeline.SeqRange) (map[uint64]int, error) {
	x.leaves++
	out := map[uint64]int{}
	for _, d := range x.docs {
		if in(ranges, d.Seq) {
			out[d.Seq]++
		}
	}
	return out, nil
}

func in(ranges []pipeline.SeqRange, seq uint64) bool {
	return slices.ContainsFunc(ranges, func(r pipeline.SeqRange) bool { return seq >= r.From && seq <= r.To })
}
func (x *fakeIndex) SeqsStored(_ context.Context, _ string, seqs []uint64) (map[uint64]int, error) {
	out := map[uint64]int{}
	for _, d := range x.docs {
		if slices.Contains(seqs, d.Seq) {
			out[d.Seq]++
		}
	}
	return out, nil
}
func (x *fakeIndex) CopiesOf(_ context.Context, ids []string) ([]pipeline.Copy, error) {
	var out []pipeline.Copy
	for _, d := range x.docs {
		if slices.Contains(ids, d.ID) {
			out = append(out, d)
		}
	}
	return out, nil
}
func (x *fakeIndex) CopiesOfSeqs(_ context.Context, _ string, seqs []uint64) ([]pipeline.Copy, error) {
	var out []pipeline.Copy
	for _, d := range x.docs {
		if slices.Contains(seqs, d.Seq) {
			out = append(out, d)
		}
	}
	return out, nil
}

// world is n messages ingested cleanly: every 100th dead-lettered, every 50th a
// repeat of the id before it (whose document is therefore not stored again).
func world(n uint64) (*fakeStream, *fakeIndex) {
	s := &fakeStream{msgIDs: map[uint64]string{}, first: 1, last: n, letters: map[uint64]int{}, settled: n}
	x := &fakeIndex{}
	stored := map[string]bool{}
	for seq := uint64(1); seq <= n; seq++ {
		id := fmt.Sprintf("m-%d", seq)
		if seq%50 == 0 {
			id = s.msgIDs[seq-1]
		}
		s.msgIDs[seq] = id
		switch {
		case seq%100 == 7:
			s.letters[seq] = 1
		case !stored[id]:
			stored[id] = true
			x.docs = append(x.docs, pipeline.Copy{Index: "a-2023.03.09", ID: id, Seq: seq})
		}
	}
	return s, x
}

func (x *fakeIndex) remove(seqs ...uint64) {
	x.docs = slices.DeleteFunc(x.docs, func(d pipeline.Copy) bool { return slices.Contains(seqs, d.Seq) })
}

func audit(t *testing.T, s *fakeStream, x *fakeIndex, w Window) *Report {
	t.Helper()
	r, err := (&Auditor{Stream: s, Index: x, Name: "S", BucketWidth: 1000, LeafWidth: 16}).Audit(context.Background(), w)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestACleanWindowHasExactTotalsAndIsClean(t *testing.T) {
	s, x := world(10000)
	r := audit(t, s, x, Window{})
	if !r.Clean() || r.Messages != 10000 || r.Indexed != 9700 || r.DeadLettered != 100 || r.ProducerDuplicates != 200 || r.Missing != 0 {
		t.Errorf("report = %+v, want clean with 10000 messages, 9700 indexed, 100 dead-lettered, 200 producer duplicates", r)
	}
}

func TestWithoutProducerDuplicatesACleanWindowIsOneRequestPerBucketsAndNoMessageIsRead(t *testing.T) {
	s, x := world(10000)
	for seq, id := range s.msgIDs {
		if seq%50 == 0 {
			s.msgIDs[seq] = id + "-own"
			x.docs = append(x.docs, pipeline.Copy{ID: id + "-own", Seq: seq})
		}
	}
	r := audit(t, s, x, Window{})
	if !r.Clean() || r.Indexed != 9900 {
		t.Fatalf("report = %+v, want clean with 9900 indexed", r)
	}
	if x.buckets != 1 || x.leaves != 0 || s.gets != 0 {
		t.Errorf("%d histogram requests, %d leaves, %d messages read; want 1, 0, 0", x.buckets, x.leaves, s.gets)
	}
}

func TestMissingDocumentsAreReportedAsRangesAndOnlyTheirBucketsAreResolved(t *testing.T) {
	s, x := world(10000)
	x.remove(2, 3, 4, 5001)
	r := audit(t, s, x, Window{})
	if r.Clean() || r.Missing != 4 || !slices.Equal(r.MissingRanges, []Range{{2, 4}, {5001, 5001}}) {
		t.Errorf("missing = %d %v, want 4 in 2-4 and 5001", r.Missing, r.MissingRanges)
	}
	if r.Messages != 10000 || r.ProducerDuplicates != 200 {
		t.Errorf("messages %d, producer duplicates %d; want 10000 and 200", r.Messages, r.ProducerDuplicates)
	}
}

func TestAMissingAndADoubledSequenceInOneBucketDoNotCancelOut(t *testing.T) {
	s, x := world(1000)
	for seq, id := range s.msgIDs { // no producer duplicates: every bucket agrees but for the two faults
		s.msgIDs[seq] = id + fmt.Sprint("-", seq)
	}
	x.docs = nil
	for seq := uint64(1); seq <= 1000; seq++ {
		if s.letters[seq] == 0 {
			x.docs = append(x.docs, pipeline.Copy{Index: "a-2023.03.09", ID: s.msgIDs[seq], Seq: seq})
		}
	}
	x.remove(10)
	x.docs = append(x.docs, pipeline.Copy{Index: "a-2023.03.10", ID: "other", Seq: 20})
	r := audit(t, s, x, Window{})
	if r.Missing != 1 || r.MissingSeqs[0] != 10 {
		t.Errorf("missing = %v, want [10]", r.MissingSeqs)
	}
	if len(r.IndexedTwice) != 1 || r.IndexedTwice[0].Seq != 20 ||
		!slices.Equal(r.IndexedTwice[0].Documents, []string{"a-2023.03.09/m-20-20", "a-2023.03.10/other"}) {
		t.Errorf("indexed twice = %+v, want 20 in both indices", r.IndexedTwice)
	}
}

func TestAMissingSequenceCannotHideBehindOneIndexedAndDeadLettered(t *testing.T) {
	s, x := world(1000)
	x.remove(11)
	x.docs = append(x.docs, pipeline.Copy{ID: "again", Seq: 107}) // 107 has a dead letter
	r := audit(t, s, x, Window{})
	if r.Missing != 1 || r.MissingSeqs[0] != 11 || !slices.Equal(r.IndexedAndDeadLettered, []uint64{107}) {
		t.Errorf("missing %v, indexed and dead-lettered %v; want [11] and [107]", r.MissingSeqs, r.IndexedAndDeadLettered)
	}
}

func TestAMessageRepeatingTheIdOfAMissingOneIsMissingToo(t *testing.T) {
	s, x := world(1000)
	x.remove(49) // 50 repeated 49's id: neither document is stored now
	r := audit(t, s, x, Window{})
	if !slices.Equal(r.MissingSeqs, []uint64{49, 50}) {
		t.Errorf("missing = %v, want [49 50]", r.MissingSeqs)
	}
}

func TestAWindowPartlyBeyondTheStreamIsNeverClean(t *testing.T) {
	s, x := world(1000)
	s.first = 301
	r := audit(t, s, x, Window{})
	if r.Clean() || r.BeyondStream == nil || *r.BeyondStream != (Range{1, 300}) || r.Audited.From != 301 || r.Messages != 700 {
		t.Errorf("report = %+v, want 1-300 beyond the stream, 301-1000 audited, not clean", r)
	}
}

func TestMessagesNotYetSettledByTheDurableAreNotMissing(t *testing.T) {
	s, x := world(1000)
	x.remove(901, 950, 999)
	s.settled = 900
	r := audit(t, s, x, Window{})
	if !r.Clean() || r.NotYetIngested != 100 || r.Audited.To != 900 {
		t.Errorf("report = %+v, want clean up to 900 with 100 not yet ingested", r)
	}
}

func TestDeletedMessagesAreNotMessagesAndTheirDocumentsAreNoProblem(t *testing.T) {
	s, x := world(1000)
	s.deleted = []uint64{5, 6}
	x.remove(6)
	r := audit(t, s, x, Window{})
	if !r.Clean() || r.Messages != 998 || r.IndexedNotInStream != 1 {
		t.Errorf("report = %+v, want clean, 998 messages, 1 document of a deleted message", r)
	}
}

func TestAWindowByTimePartlyBeyondTheStreamNamesEverySequenceItMayHaveHeld(t *testing.T) {
	s, x := world(1000)
	s.first, s.trimmedSince = 301, true
	r := audit(t, s, x, Window{Since: time.Date(2026, 11, 28, 0, 0, 0, 0, time.UTC)})
	if r.Clean() || r.BeyondStream == nil || *r.BeyondStream != (Range{1, 300}) {
		t.Fatalf("report = %+v, beyond %v; want 1-300 beyond the stream (sequences start at 1), not clean", r, r.BeyondStream)
	}
	var buf bytes.Buffer
	if err := r.WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	var j struct {
		Beyond map[string]uint64 `json:"beyond_stream"`
	}
	if err := json.Unmarshal(buf.Bytes(), &j); err != nil || j.Beyond["from"] != 1 || j.Beyond["to"] != 300 {
		t.Errorf("JSON beyond_stream = %v (%v), want from 1 to 300:\n%s", j.Beyond, err, buf.String())
	}
	buf.Reset()
	r.WriteText(&buf)
	want := "NOT AUDITED: messages published since 2026-11-28T00:00:00Z may be among sequences 1-300, beyond the stream, which now begins at sequence 301"
	if !strings.Contains(buf.String(), want) {
		t.Errorf("text report does not say %q:\n%s", want, buf.String())
	}
}

func TestARepairIsCleanWhenEveryMissingSequenceWasSettled(t *testing.T) {
	s, x := world(1000)
	x.remove(49) // 50 repeated 49's id: replayed, 49 is indexed and 50 then found indexed
	r := audit(t, s, x, Window{})
	if r.Missing != 2 {
		t.Fatalf("missing = %v, want [49 50]", r.MissingSeqs)
	}
	for _, tt := range []struct {
		replayed, unsettled int64
		want                bool
	}{
		{2, 0, true},  // indexed, then found indexed (or dead-lettered): all settled
		{1, 1, false}, // one could be neither indexed nor dead-lettered
		{1, 0, false}, // one was not replayed (deleted from the stream meanwhile)
	} {
		if got := r.CleanAfterRepair(tt.replayed, tt.unsettled); got != tt.want {
			t.Errorf("CleanAfterRepair(%d replayed, %d unsettled) = %v, want %v", tt.replayed, tt.unsettled, got, tt.want)
		}
	}

	x.docs = append(x.docs, pipeline.Copy{Index: "a-2023.03.10", ID: "m-3", Seq: 3})
	if r := audit(t, s, x, Window{}); r.CleanAfterRepair(r.Missing, 0) {
		t.Errorf("a window with sequence 3 indexed twice is clean after replaying its missing sequences; a replay does not remove documents")
	}
}

func TestARepairReplaysTheMissingRangesAndSaysWhetherTheWindowIsThenClean(t *testing.T) {
	s, x := world(1000)
	x.remove(49, 120, 121) // 50 repeated 49's id
	r := audit(t, s, x, Window{})
	wantRanges := []Range{{49, 50}, {120, 121}}
	if !slices.Equal(r.MissingRanges, wantRanges) {
		t.Fatalf("missing ranges = %v, want %v", r.MissingRanges, wantRanges)
	}
	failed := errors.New("nats: connection closed")
	for _, tt := range []struct {
		name               string
		settled, unsettled int64
		err                error
		want               bool
	}{
		{"every missing message settled", 4, 0, nil, true},
		{"one neither indexed nor dead-lettered", 3, 1, nil, false},
		{"one no longer in the stream", 3, 0, nil, false},
		{"the replay failed", 4, 0, failed, false},
	} {
		var asked []Range
		clean, err := r.Repair(context.Background(), func(_ context.Context, ranges []Range) (int64, int64, error) {
			asked = ranges
			return tt.settled, tt.unsettled, tt.err
		})
		if clean != tt.want || !errors.Is(err, tt.err) {
			t.Errorf("%s: Repair = %v, %v; want %v, %v", tt.name, clean, err, tt.want, tt.err)
		}
		if !slices.Equal(asked, wantRanges) {
			t.Errorf("%s: replayed %v, want the missing ranges %v", tt.name, asked, wantRanges)
		}
	}
}

func TestARepairOfAWindowWithNothingMissingReplaysNothing(t *testing.T) {
	s, x := world(1000)
	x.docs = append(x.docs, pipeline.Copy{Index: "a-2023.03.10", ID: "m-3", Seq: 3})
	r := audit(t, s, x, Window{})
	clean, err := r.Repair(context.Background(), func(context.Context, []Range) (int64, int64, error) {
		t.Error("replayed a window with nothing missing")
		return 0, 0, nil
	})
	if clean || err != nil {
		t.Errorf("Repair of a window with sequence 3 indexed twice = %v, %v; want not clean: a replay does not remove documents", clean, err)
	}
}

// The messages of a window are its span less the sequences deleted in it
// (natsaudit checks the deleted list against a real stream's).
func TestTheMessagesOfAWindowAreItsSpanLessItsDeletedSequences(t *testing.T) {
	deleted := []uint64{7, 8, 15} // of a stream holding 4-20
	for _, tt := range []struct {
		a, b uint64
		want int64
	}{
		{4, 20, 14},
		{5, 9, 3},   // 5, 6 and 9
		{14, 16, 2}, // 14 and 16
		{7, 8, 0},
		{9, 6, 0}, // an empty window
	} {
		if got := messagesIn(deleted, tt.a, tt.b); got != tt.want {
			t.Errorf("messages in %d-%d = %d, want %d", tt.a, tt.b, got, tt.want)
		}
	}
}
