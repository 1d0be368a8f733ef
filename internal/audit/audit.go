// Package audit proves, for a window of stream sequences, that every message the
// stream holds reached Elasticsearch or the dead-letter stream, and names those
// that did not.
//
// Every document carries the stream sequence of its message (@nats.seq) and every
// dead letter its original sequence, so the three sides can be compared by
// sequence without reading documents:
//
//   - the stream: StreamInfo gives the first and last sequence it holds and the
//     sequences deleted in between, so the messages in [a, b] are
//     (b-a+1) - deleted in [a, b], with no message read;
//   - the dead letters: the dead-letter stream is small; it is read once, headers
//     only. Which of them were indexed as well is one terms query.
//   - Elasticsearch: one histogram aggregation over @nats.seq counts, per bucket of
//     sequences, the documents and the distinct sequences among them.
//
// A bucket is clean when it holds as many documents as distinct sequences (none
// stored twice) and as many distinct sequences as the stream has messages there,
// less those only dead-lettered, plus those indexed whose message the stream has
// since deleted. The distinct count is a cardinality aggregation kept below its
// precision threshold, where Elasticsearch counts in a hash set: a collision can
// only make it short, which fails the check and costs a closer look, never hides a
// problem. Two opposite errors cannot cancel out either: a missing sequence lowers
// the distinct count, a sequence stored twice raises the document count above it,
// and the dead-lettered and deleted sequences are matched exactly, not counted.
//
// Buckets that disagree are split, eight ways, until they are at most
// Auditor.LeafWidth wide; a leaf is resolved exactly: its sequences with their
// document counts (a composite aggregation), and for each sequence neither indexed
// nor dead-lettered its message is read from the stream to derive its document id.
// If that id is stored under another sequence, the message repeated a producer's
// Nats-Msg-Id and its document was rightly not stored twice; otherwise it is
// missing. So a clean window costs one request per 256 buckets, and the work grows
// with the problems (and the producer duplicates), not with the documents.
package audit

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/annotated-data/pipeline/internal/pipeline"
)

// Index is what the audit asks of Elasticsearch, about the documents of one stream.
type Index interface {
	// SeqBuckets counts documents and distinct sequences in consecutive ranges of
	// width sequences from from to to.
	SeqBuckets(ctx context.Context, stream string, from, to, width uint64) ([]pipeline.SeqBucket, error)
	// SeqCounts returns the documents of each sequence from from to to, exactly.
	SeqCounts(ctx context.Context, stream string, from, to uint64) (map[uint64]int, error)
	// SeqsStored returns, of seqs, those that have documents, and how many.
	SeqsStored(ctx context.Context, stream string, seqs []uint64) (map[uint64]int, error)
	// CopiesOf lists the documents stored under ids.
	CopiesOf(ctx context.Context, ids []string) ([]pipeline.Copy, error)
	// CopiesOfSeqs lists the documents that hold seqs.
	CopiesOfSeqs(ctx context.Context, stream string, seqs []uint64) ([]pipeline.Copy, error)
}

// Stream is what the audit asks of JetStream.
type Stream interface {
	// State is what the stream holds now, and how far the durable consumer got.
	State(ctx context.Context) (State, error)
	// Since returns the first sequence published at or after t, and whether
	// messages published since t may already have been dropped.
	Since(ctx context.Context, t time.Time) (seq uint64, trimmed bool, err error)
	// DeadLetters counts the dead letters of the stream's messages by original
	// sequence.
	DeadLetters(ctx context.Context) (map[uint64]int, error)
	// DocumentIDs returns the document id each message at seqs is stored under;
	// a sequence the stream no longer holds is left out.
	DocumentIDs(ctx context.Context, seqs []uint64) (map[uint64]string, error)
}

// State is what a stream holds.
type State struct {
	First, Last uint64   // the first and last sequence it holds (First = Last+1 when empty)
	Deleted     []uint64 // sequences between First and Last it no longer holds, sorted
	// Settled is the durable consumer's ack floor: every message up to it was
	// indexed or dead-lettered. HasDurable is false when there is no durable.
	Settled    uint64
	HasDurable bool
}

// Window chooses the sequences to audit: From to To (both included; 0 To: the
// last), or, when Since is set, those published since then.
type Window struct {
	From, To uint64
	Since    time.Time
}

// Auditor audits the documents of one stream.
type Auditor struct {
	Stream Stream
	Index  Index
	Name   string // the stream's name, as documents record it in @nats.stream

	// BucketWidth is the widest range of sequences counted in one bucket
	// (default 16384); it must not exceed what the index counts exactly
	// (store.MaxExactBucket).
	BucketWidth uint64
	// LeafWidth is the widest range resolved sequence by sequence (default 2048).
	LeafWidth uint64
}

// bucketsPerRequest bounds one histogram request.
const bucketsPerRequest = 256

// Audit compares the stream, the dead letters and the documents over w.
func (a *Auditor) Audit(ctx context.Context, w Window) (*Report, error) {
	a.BucketWidth = cmp.Or(a.BucketWidth, 16384)
	a.LeafWidth = cmp.Or(a.LeafWidth, 2048)
	st, err := a.Stream.State(ctx)
	if err != nil {
		return nil, err
	}
	r := &Report{Stream: a.Name, FirstHeld: st.First, LastHeld: st.Last}
	from, to := max(w.From, 1), w.To
	if !w.Since.IsZero() {
		seq, trimmed, err := a.Stream.Since(ctx, w.Since)
		if err != nil {
			return nil, err
		}
		from, r.Since = seq, w.Since.UTC().Format(time.RFC3339)
		if trimmed {
			r.BeyondStream = &Range{From: 0, To: st.First - 1}
		}
	}
	if to == 0 || to > st.Last {
		to = st.Last
	}
	r.Window = Range{From: from, To: to}
	if from < st.First && from <= st.Last {
		r.BeyondStream = &Range{From: from, To: min(st.First-1, to)}
	}
	lo, hi := max(from, st.First), to
	if st.HasDurable && st.Settled < hi {
		if lo <= hi {
			r.NotYetIngested = messagesIn(st.Deleted, max(lo, st.Settled+1), hi)
		}
		hi = st.Settled
	}
	if lo > hi {
		return r, nil
	}
	r.Audited = &Range{From: lo, To: hi}

	letters, err := a.Stream.DeadLetters(ctx)
	if err != nil {
		return nil, err
	}
	r.Requests++
	deleted := within(st.Deleted, lo, hi)
	var lettered []uint64
	for seq := range letters {
		if seq >= lo && seq <= hi && !contains(deleted, seq) {
			lettered = append(lettered, seq)
		}
	}
	slices.Sort(lettered)
	r.DeadLettered = int64(len(lettered))
	// Which dead-lettered and which deleted sequences have documents is asked
	// outright: they are few, and matched exactly they cannot hide a missing one.
	both, err := a.stored(ctx, r, lettered)
	if err != nil {
		return nil, err
	}
	r.IndexedAndDeadLettered = both
	orphans, err := a.stored(ctx, r, deleted)
	if err != nil {
		return nil, err
	}
	r.IndexedNotInStream = int64(len(orphans))

	c := &check{a: a, r: r, deleted: deleted, orphans: orphans, lettered: lettered, onlyLettered: without(lettered, both), letters: letters}
	for start := lo; start <= hi; {
		end := min(hi, start+a.BucketWidth*bucketsPerRequest-1)
		if err := c.buckets(ctx, start, end, a.BucketWidth); err != nil {
			return nil, err
		}
		if end == hi {
			break
		}
		start = end + 1
	}
	if err := c.finish(ctx); err != nil {
		return nil, err
	}
	return r, nil
}

func (a *Auditor) stored(ctx context.Context, r *Report, seqs []uint64) ([]uint64, error) {
	if len(seqs) == 0 {
		return nil, nil
	}
	r.Requests++
	counts, err := a.Index.SeqsStored(ctx, a.Name, seqs)
	if err != nil {
		return nil, err
	}
	var out []uint64
	for seq := range counts {
		out = append(out, seq)
	}
	slices.Sort(out)
	return out, nil
}

// check walks the buckets of one audit.
type check struct {
	a            *Auditor
	r            *Report
	deleted      []uint64 // sorted
	orphans      []uint64 // deleted sequences that have documents, sorted
	lettered     []uint64 // dead-lettered sequences, sorted
	onlyLettered []uint64 // dead-lettered and not indexed, sorted
	letters      map[uint64]int
	missing      []uint64
	doubled      []uint64
}

func (c *check) buckets(ctx context.Context, from, to, width uint64) error {
	c.r.Requests++
	got, err := c.a.Index.SeqBuckets(ctx, c.a.Name, from, to, width)
	if err != nil {
		return err
	}
	byStart := make(map[uint64]pipeline.SeqBucket, len(got))
	for _, b := range got {
		byStart[b.From] = b
	}
	for start := from; start <= to; start += width {
		end := min(to, start+width-1)
		b := byStart[start]
		msgs := messagesIn(c.deleted, start, end)
		want := msgs - count(c.onlyLettered, start, end) + count(c.orphans, start, end)
		if b.Documents == b.Sequences && b.Sequences == want {
			c.r.Messages += msgs
			c.r.Indexed += b.Sequences - count(c.orphans, start, end)
		} else if end-start+1 <= c.a.LeafWidth {
			if err := c.leaf(ctx, start, end); err != nil {
				return err
			}
		} else if err := c.buckets(ctx, start, end, max(c.a.LeafWidth, width/8)); err != nil {
			return err
		}
		if end == to {
			break
		}
	}
	return nil
}

// leaf resolves from to to sequence by sequence.
func (c *check) leaf(ctx context.Context, from, to uint64) error {
	c.r.Requests++
	counts, err := c.a.Index.SeqCounts(ctx, c.a.Name, from, to)
	if err != nil {
		return err
	}
	var candidates []uint64
	for seq := from; seq <= to; seq++ {
		if contains(c.deleted, seq) {
			continue
		}
		n := counts[seq]
		switch {
		case n > 0:
			c.r.Indexed++
			if n > 1 {
				c.doubled = append(c.doubled, seq)
			}
		case c.letters[seq] > 0:
		default:
			candidates = append(candidates, seq)
		}
		c.r.Messages++
	}
	if len(candidates) == 0 {
		return nil
	}
	c.r.Requests++
	ids, err := c.a.Stream.DocumentIDs(ctx, candidates)
	if err != nil {
		return err
	}
	unique := map[string]bool{}
	for _, id := range ids {
		unique[id] = true
	}
	c.r.Requests++
	copies, err := c.a.Index.CopiesOf(ctx, sortedKeys(unique))
	if err != nil {
		return err
	}
	storedAs := map[string][]uint64{}
	for _, cp := range copies {
		storedAs[cp.ID] = append(storedAs[cp.ID], cp.Seq)
	}
	for _, seq := range candidates {
		id, held := ids[seq]
		switch {
		case !held: // deleted from the stream meanwhile
			c.r.Messages--
		case slices.ContainsFunc(storedAs[id], func(s uint64) bool { return s != seq }):
			c.r.ProducerDuplicates++
		default:
			c.missing = append(c.missing, seq)
		}
	}
	return nil
}

func (c *check) finish(ctx context.Context) error {
	slices.Sort(c.missing)
	c.r.MissingSeqs = c.missing
	c.r.Missing = int64(len(c.missing))
	c.r.MissingRanges = ranges(c.missing)
	if len(c.doubled) == 0 {
		return nil
	}
	slices.Sort(c.doubled)
	c.r.Requests++
	copies, err := c.a.Index.CopiesOfSeqs(ctx, c.a.Name, c.doubled)
	if err != nil {
		return err
	}
	where := map[uint64][]string{}
	for _, cp := range copies {
		where[cp.Seq] = append(where[cp.Seq], cp.Index+"/"+cp.ID)
	}
	for _, seq := range c.doubled {
		slices.Sort(where[seq])
		c.r.IndexedTwice = append(c.r.IndexedTwice, Doubled{Seq: seq, Documents: where[seq]})
	}
	return nil
}

// messagesIn counts the sequences from a to b that are not deleted.
func messagesIn(deleted []uint64, a, b uint64) int64 {
	if a > b {
		return 0
	}
	return int64(b-a+1) - count(deleted, a, b)
}

// count counts the values of sorted from a to b.
func count(sorted []uint64, a, b uint64) int64 {
	i, _ := slices.BinarySearch(sorted, a)
	j, _ := slices.BinarySearch(sorted, b+1)
	return int64(j - i)
}

func within(sorted []uint64, a, b uint64) []uint64 {
	i, _ := slices.BinarySearch(sorted, a)
	j, _ := slices.BinarySearch(sorted, b+1)
	return sorted[i:j]
}

func contains(sorted []uint64, v uint64) bool {
	_, ok := slices.BinarySearch(sorted, v)
	return ok
}

func without(sorted, remove []uint64) []uint64 {
	var out []uint64
	for _, v := range sorted {
		if !contains(remove, v) {
			out = append(out, v)
		}
	}
	return out
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// ranges compresses sorted sequences into ranges of consecutive ones.
func ranges(sorted []uint64) []Range {
	var out []Range
	for _, s := range sorted {
		if n := len(out); n > 0 && out[n-1].To+1 == s {
			out[n-1].To = s
			continue
		}
		out = append(out, Range{From: s, To: s})
	}
	return out
}

// String writes r as 7 or 7-9.
func (r Range) String() string {
	if r.From == r.To {
		return fmt.Sprint(r.From)
	}
	return fmt.Sprintf("%d-%d", r.From, r.To)
}
