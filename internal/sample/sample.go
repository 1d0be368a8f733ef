// Package sample generates realistic annotated camera frames, for demos, tests and
// load: each frame has a camera id, a frame number, a timestamp and a list of
// labelled boxes with confidences.
package sample

import (
	"fmt"
	"math/rand/v2"
	"time"
)

// Frame is one annotated camera frame as producers publish it.
type Frame struct {
	CameraID    string  `json:"camera_id"`
	Frame       uint64  `json:"frame"`
	Timestamp   string  `json:"timestamp"`
	Width       int     `json:"width"`
	Height      int     `json:"height"`
	Site        string  `json:"site"`
	Model       string  `json:"model"`
	InferenceMS float64 `json:"inference_ms"`
	Labels      []Label `json:"labels"`
}

// Label is one detected object.
type Label struct {
	Label      string  `json:"label"`
	Confidence float64 `json:"confidence"`
	Box        [4]int  `json:"box"` // x, y, width, height in pixels
	TrackID    int     `json:"track_id"`
}

// MsgID is the Nats-Msg-Id a frame is published with: the same frame published twice
// is the same message. It holds the frame's time as well as its camera and number,
// since frames numbered alike from another start (publisher --start) are other
// frames, and the stream would drop them as duplicates.
func (f Frame) MsgID() string { return fmt.Sprintf("%s-%d@%s", f.CameraID, f.Frame, f.Timestamp) }

// Subject is the subject a frame is published on, under prefix.
func (f Frame) Subject(prefix string) string { return prefix + "." + f.CameraID }

var sites = []string{"depot-north", "gate-2", "loading-bay", "parking-east"}

var classes = []string{"person", "car", "bicycle", "dog", "truck", "bus", "backpack", "traffic light"}

// Generator produces frames from several cameras, round robin, with timestamps
// advancing by Interval per round from Start. It is deterministic: the same settings
// give the same frames, so a repeated demo publishes the same messages.
type Generator struct {
	Start    time.Time
	Interval time.Duration
	Cameras  int
	n        uint64
}

// Next returns the next frame.
func (g *Generator) Next() Frame {
	cameras := uint64(max(g.Cameras, 1))
	i := g.n
	g.n++
	cam, round := i%cameras, i/cameras
	rng := rand.New(rand.NewPCG(i, 0x5eed))
	labels := make([]Label, 2+rng.IntN(4))
	for j := range labels {
		labels[j] = Label{
			Label:      classes[rng.IntN(len(classes))],
			Confidence: float64(500+rng.IntN(500)) / 1000,
			Box:        [4]int{rng.IntN(1800), rng.IntN(1000), 20 + rng.IntN(300), 20 + rng.IntN(300)},
			TrackID:    int(cam)*1000 + rng.IntN(1000),
		}
	}
	return Frame{
		CameraID:    fmt.Sprintf("cam-%02d", cam+1),
		Frame:       round + 1,
		Timestamp:   g.Start.Add(time.Duration(round) * g.Interval).UTC().Format("2006-01-02T15:04:05.000Z07:00"),
		Width:       1920,
		Height:      1080,
		Site:        sites[cam%uint64(len(sites))],
		Model:       "yolov8n",
		InferenceMS: float64(80+rng.IntN(400)) / 10,
		Labels:      labels,
	}
}
