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
//     sequences, the documents and the sum of their sequences.
//
// The stream side gives the expected set of sequences of a bucket exactly: the
// messages held, less those only dead-lettered, plus those indexed whose message
// the stream has since deleted. A bucket is clean when Elasticsearch holds exactly
// as many documents as that set has members, with exactly the same sum. Opposite
// errors cannot hide each other the way they would behind a count alone: a
// missing sequence a and a sequence b stored twice leave the count as it was but
// change the sum by b-a, never 0; the dead-lettered and deleted sequences are
// matched outright, not counted. (Only several missing and several doubled
// sequences in one bucket whose sums happen to be equal would pass; each bucket of
// a clean window is so checked at every level of the walk below.) The distinct
// count Elasticsearch offers, the cardinality aggregation, is no help here: it is
// an estimate, measured here at 16,385 distinct among 16,384 sequences, which
// would raise false alarms and could hide a real loss.
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
	"maps"
	"math/bits"
	"slices"
	"time"

	"github.com/annotated-data/pipeline/internal/pipeline"
)

// Index is what the audit asks of Elasticsearch, about the documents of one stream.
type Index interface {
	// SeqBuckets counts documents and sums their sequences in buckets of width
	// sequences aligned on offset, over ranges; buckets without documents may be
	// left out.
	SeqBuckets(ctx context.Context, stream string, ranges []pipeline.SeqRange, width, offset uint64) ([]pipeline.SeqBucket, error)
	// SeqCounts returns the documents of each sequence in ranges, exactly.
	SeqCounts(ctx context.Context, stream string, ranges []pipeline.SeqRange) (map[uint64]int, error)
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
	// (default 16384, rounded down to a power of two); each level of the walk
	// divides it by eight, so every bucket lies within one bucket of the level
	// above.
	BucketWidth uint64
	// LeafWidth is the widest range resolved sequence by sequence (default 64).
	LeafWidth uint64
	// Visible is how long after it is stored a document becomes searchable (the
	// index refresh interval). The audit waits this long after reading the
	// durable's ack floor before it counts, so that a message acknowledged just
	// before is not taken for a missing one.
	Visible time.Duration
}

// bucketsPerRequest bounds the buckets one histogram request asks for.
const bucketsPerRequest = 4096

// Audit compares the stream, the dead letters and the documents over w.
func (a *Auditor) Audit(ctx context.Context, w Window) (*Report, error) {
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
			// Which of the dropped sequences were published since then is
			// unknown: say all of them may have been.
			r.BeyondStream = &Range{From: 1, To: st.First - 1}
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

	if a.Visible > 0 && st.HasDurable {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(a.Visible):
		}
	}
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

	c := &check{a: a, r: r, deleted: deleted, orphans: orphans, onlyLettered: without(lettered, both), letters: letters,
		bucket: uint64(1) << (bits.Len64(cmp.Or(a.BucketWidth, 16384)) - 1), leaf: cmp.Or(a.LeafWidth, 64)}
	if err := c.walk(ctx, lo, hi); err != nil {
		return nil, err
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
	bucket, leaf uint64   // the widths of the first level and of leaves
	deleted      []uint64 // sorted
	orphans      []uint64 // deleted sequences that have documents, sorted
	onlyLettered []uint64 // dead-lettered and not indexed, sorted
	letters      map[uint64]int
	missing      []uint64
	doubled      []uint64
}

// walk checks lo to hi level by level: the whole window in buckets of
// BucketWidth, then the buckets that disagreed in buckets an eighth as wide, and so
// on, each level in as few requests as its buckets allow; buckets no wider than
// LeafWidth that disagree are resolved sequence by sequence.
func (c *check) walk(ctx context.Context, lo, hi uint64) error {
	parents := []pipeline.SeqRange{{From: lo, To: hi}}
	for width := c.bucket; len(parents) > 0; width = max(1, width/8) {
		var next, leaves []pipeline.SeqRange
		for batch := range batches(parents, width) {
			c.r.Requests++
			got, err := c.a.Index.SeqBuckets(ctx, c.a.Name, batch, width, lo%width)
			if err != nil {
				return err
			}
			byStart := make(map[uint64]pipeline.SeqBucket, len(got))
			for _, b := range got {
				byStart[b.From] = b
			}
			for _, p := range batch {
				for start := p.From; start <= p.To; start += width {
					end := min(p.To, start+width-1)
					switch {
					case c.agrees(byStart[start], start, end):
					case end-start+1 <= c.leaf || width == 1:
						leaves = append(leaves, pipeline.SeqRange{From: start, To: end})
					default:
						next = append(next, pipeline.SeqRange{From: start, To: end})
					}
					if end == p.To {
						break
					}
				}
			}
		}
		if err := c.resolve(ctx, leaves); err != nil {
			return err
		}
		parents = next
	}
	return nil
}

// batches splits ranges into groups of at most bucketsPerRequest buckets of width.
func batches(ranges []pipeline.SeqRange, width uint64) func(yield func([]pipeline.SeqRange) bool) {
	return func(yield func([]pipeline.SeqRange) bool) {
		var batch []pipeline.SeqRange
		var n uint64
		for _, r := range ranges {
			// A range wider than a whole request is cut into pieces.
			for from := r.From; from <= r.To; {
				to := min(r.To, from+width*bucketsPerRequest-1)
				buckets := (to-from)/width + 1
				if n+buckets > bucketsPerRequest && len(batch) > 0 {
					if !yield(batch) {
						return
					}
					batch, n = nil, 0
				}
				batch, n = append(batch, pipeline.SeqRange{From: from, To: to}), n+buckets
				if to == r.To {
					break
				}
				from = to + 1
			}
		}
		if len(batch) > 0 {
			yield(batch)
		}
	}
}

// agrees reports whether bucket b of start to end holds exactly the documents
// the stream side expects: as many, with the same sum of sequences.
func (c *check) agrees(b pipeline.SeqBucket, start, end uint64) bool {
	msgs := messagesIn(c.deleted, start, end)
	orphans := count(c.orphans, start, end)
	want := msgs - count(c.onlyLettered, start, end) + orphans
	wantSum := rangeSum(start, end) - sum(c.deleted, start, end) - sum(c.onlyLettered, start, end) + sum(c.orphans, start, end)
	if b.Documents != want || b.SeqSum != wantSum {
		return false
	}
	c.r.Messages += msgs
	c.r.Indexed += want - orphans
	return true
}

// resolve goes through leaves sequence by sequence: one composite aggregation for
// their document counts, and for the sequences neither indexed nor dead-lettered,
// their messages and where their ids are stored.
func (c *check) resolve(ctx context.Context, leaves []pipeline.SeqRange) error {
	if len(leaves) == 0 {
		return nil
	}
	c.r.Requests++
	counts, err := c.a.Index.SeqCounts(ctx, c.a.Name, leaves)
	if err != nil {
		return err
	}
	var candidates []uint64
	for _, l := range leaves {
		for seq := l.From; seq <= l.To; seq++ {
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
	copies, err := c.a.Index.CopiesOf(ctx, slices.Sorted(maps.Keys(unique)))
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

// sum adds the values of sorted from a to b.
func sum(sorted []uint64, a, b uint64) uint64 {
	var s uint64
	for _, v := range within(sorted, a, b) {
		s += v
	}
	return s
}

// rangeSum is a + (a+1) + … + b.
func rangeSum(a, b uint64) uint64 {
	n := b - a + 1
	if n%2 == 0 {
		return n / 2 * (a + b)
	}
	return (a + b) / 2 * n
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
