package bench

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
)

// ErrNoSamples is returned when statistics are asked of an empty sample.
var ErrNoSamples = errors.New("no samples")

// BootstrapResamples is how many resamples Summarize draws for the
// confidence interval on the median.
const BootstrapResamples = 2000

// bootstrapSeed makes the bootstrap deterministic: the same samples always
// give the same interval.
const bootstrapSeed = 0x5c7ace

// Summary describes one sample of round-trip times, in TSC ticks.
//
// Percentiles use the nearest-rank definition (the smallest value with at
// least p percent of the sample at or below it), the one the teaching
// kernel prints, so the two can be compared exactly. The median is the
// 50th percentile in that sense: for an even count, the lower middle value.
type Summary struct {
	N      int     `json:"n"`
	Min    int64   `json:"min"`
	Max    int64   `json:"max"`
	Median int64   `json:"median"`
	Mean   float64 `json:"mean"`
	P90    int64   `json:"p90"`
	P99    int64   `json:"p99"`
	// MAD is the median absolute deviation from the median, unscaled.
	MAD int64 `json:"mad"`
	// CILow and CIHigh bound a 95% percentile-bootstrap confidence
	// interval on the median (BootstrapResamples resamples, fixed seed).
	CILow  int64 `json:"ci95_low"`
	CIHigh int64 `json:"ci95_high"`
}

// Summarize computes the Summary of samples. It does not modify samples.
// A single sample is summarized (with a degenerate interval); an empty one
// is an error.
func Summarize(samples []int64) (Summary, error) {
	if len(samples) == 0 {
		return Summary{}, ErrNoSamples
	}
	sorted := slices.Clone(samples)
	slices.Sort(sorted)
	var sum float64
	for _, v := range sorted {
		sum += float64(v)
	}
	s := Summary{
		N:      len(sorted),
		Min:    sorted[0],
		Max:    sorted[len(sorted)-1],
		Median: Percentile(sorted, 50),
		Mean:   sum / float64(len(sorted)),
		P90:    Percentile(sorted, 90),
		P99:    Percentile(sorted, 99),
	}
	dev := make([]int64, len(sorted))
	for i, v := range sorted {
		dev[i] = abs(v - s.Median)
	}
	slices.Sort(dev)
	s.MAD = Percentile(dev, 50)
	s.CILow, s.CIHigh = bootstrapMedianCI(sorted, BootstrapResamples, bootstrapSeed)
	return s, nil
}

// Percentile returns the nearest-rank p-th percentile (0 < p <= 100) of
// sorted, which must be sorted in increasing order and not empty: the
// value at rank ceil(p*n/100), counting from 1.
func Percentile(sorted []int64, p float64) int64 {
	if len(sorted) == 0 {
		panic("bench: Percentile of an empty sample")
	}
	return sorted[percentileIndex(len(sorted), p)]
}

func percentileIndex(n int, p float64) int {
	rank := int(math.Ceil(p * float64(n) / 100))
	return min(max(rank-1, 0), n-1)
}

// bootstrapMedianCI draws b resamples (with replacement) of sorted and
// returns the 2.5th and 97.5th percentiles of their medians.
//
// A resample is represented by how often it drew each index of sorted; as
// sorted is in order, the resample's k-th smallest value is sorted[j] for
// the first j at which the running count reaches k. That makes each
// resample O(n) instead of a sort.
func bootstrapMedianCI(sorted []int64, b int, seed uint64) (lo, hi int64) {
	n := len(sorted)
	if n == 1 {
		return sorted[0], sorted[0]
	}
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	counts := make([]int32, n)
	medians := make([]int64, b)
	k := percentileIndex(n, 50) + 1 // rank of the median, from 1
	for r := range medians {
		clear(counts)
		for range n {
			counts[rng.IntN(n)]++
		}
		var run int
		for j, c := range counts {
			run += int(c)
			if run >= k {
				medians[r] = sorted[j]
				break
			}
		}
	}
	slices.Sort(medians)
	return Percentile(medians, 2.5), Percentile(medians, 97.5)
}

func abs(v int64) int64 {
	if v < 0 {
		return -v
	}
	return v
}

// String formats s on one line, for logs and test failures.
func (s Summary) String() string {
	return fmt.Sprintf("n=%d min=%d median=%d mean=%.1f p90=%d p99=%d mad=%d ci95=[%d,%d]",
		s.N, s.Min, s.Median, s.Mean, s.P90, s.P99, s.MAD, s.CILow, s.CIHigh)
}
