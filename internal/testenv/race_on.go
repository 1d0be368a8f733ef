//go:build race

package testenv

const raceEnabled = true

// RaceDetector says whether the tests run with the race detector, which makes
// the code under test several times slower: a test of how long something takes
// states its bound for the code as built for production, and only reports the
// time under the detector.
const RaceDetector = raceEnabled
