package api

import (
	"testing"
	"time"
)

// readFor feeds p a client that hands on chunk bytes every interval of waiting,
// for at most d of busy time, and returns the busy time at which the rule cut it
// (0: never).
func readFor(p *pace, chunk int, interval, d time.Duration) time.Duration {
	for p.busy < d {
		if allowed := p.allowance(); allowed < interval {
			return p.busy + allowed
		}
		p.took(chunk, interval)
	}
	return 0
}

func defaultPace() *pace { return &pace{window: 30 * time.Second, minRate: 16 << 10} }

func TestPaceCutsAClientThatNeverReadsOneWindowAfterItsBuffersFilled(t *testing.T) {
	p := defaultPace()
	p.took(4<<20, 0) // the socket buffers and flow-control windows fill at once
	if got := p.allowance(); got != 30*time.Second {
		t.Fatalf("allowance after filling the buffers = %s, want the whole window, 30s", got)
	}
	p.took(0, 12*time.Second) // a flush that waited and failed
	if got := p.allowance(); got != 18*time.Second {
		t.Errorf("allowance after waiting 12s for nothing = %s, want 18s", got)
	}
}

func TestPaceCutsAReaderOfOneKBPerSecondOneWindowAfterItsBuffersFilled(t *testing.T) {
	p := defaultPace()
	p.took(4<<20, 0)
	if cut := readFor(p, 4<<10, 4*time.Second, 10*time.Minute); cut != 30*time.Second {
		t.Errorf("a 1 KB/s reader was cut after %s of waiting, want 30s", cut)
	}
}

func TestPaceNeverCutsAReaderOf150KBPerSecondWhoseBuffersReopenInLargeSteps(t *testing.T) {
	// As measured over TLS on loopback: 1.4 MB handed on at once, then a 9.6 s wait.
	p := defaultPace()
	p.took(4<<20, 0)
	if cut := readFor(p, 1400<<10, 9600*time.Millisecond, time.Hour); cut != 0 {
		t.Errorf("a 150 KB/s reader in 1.4 MB steps was cut after %s of waiting", cut)
	}
}

func TestPaceHoldsTheLineAtTheMinimumRate(t *testing.T) {
	above := defaultPace()
	if cut := readFor(above, 4<<10, 200*time.Millisecond, time.Hour); cut != 0 { // 20 KB/s
		t.Errorf("a 20 KB/s reader was cut after %s", cut)
	}
	below := defaultPace()
	if cut := readFor(below, 4<<10, 333*time.Millisecond, time.Hour); cut == 0 || cut > 30*time.Second { // 12 KB/s
		t.Errorf("a 12 KB/s reader was cut after %s, want within the 30s window", cut)
	}
}

func TestPaceGivesANewStreamOneWindowToTakeItsFirstBytes(t *testing.T) {
	p := defaultPace()
	if got := p.allowance(); got != 30*time.Second {
		t.Errorf("a new stream's allowance = %s, want 30s", got)
	}
	p.took(100, 29*time.Second)
	if got := p.allowance(); got != time.Second {
		t.Errorf("after 100 bytes in 29s, allowance = %s, want 1s", got)
	}
}

func TestPaceKeepsABoundedNumberOfSamples(t *testing.T) {
	p := &pace{window: 30 * time.Second, minRate: 16 << 10}
	// Just above the minimum rate, so that nothing in the window is dropped as
	// outrun, in small waits, so that the merging is what bounds them.
	readFor(p, 4<<10, 240*time.Millisecond, time.Hour)
	if len(p.samples) > 66 {
		t.Errorf("%d samples kept, want at most 66", len(p.samples))
	}
}
