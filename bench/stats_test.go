package bench

import (
	"errors"
	"math"
	"slices"
	"testing"
)

func seq(lo, hi int64) []int64 {
	var s []int64
	for v := lo; v <= hi; v++ {
		s = append(s, v)
	}
	return s
}

func reversed(s []int64) []int64 {
	slices.Reverse(s)
	return s
}

func TestSummarize(t *testing.T) {
	outliers := append(slices.Repeat([]int64{10}, 99), 1_000_000)
	tests := []struct {
		name    string
		in      []int64
		want    Summary // CILow and CIHigh are checked separately
		ciLo    int64   // the interval must lie within [ciLo, ciHi]
		ciHi    int64
		ciExact bool
	}{
		{
			name: "1..100",
			in:   seq(1, 100),
			// Nearest rank: the 50th value is 50, the 90th 90, the 99th 99.
			// |x-50| sorted is 0,1,1,2,2,...; its 50th value is 25.
			want: Summary{N: 100, Min: 1, Max: 100, Median: 50, Mean: 50.5, P90: 90, P99: 99, MAD: 25},
			ciLo: 40, ciHi: 60,
		},
		{
			name: "reversed 1..100 gives the same",
			in:   reversed(seq(1, 100)),
			want: Summary{N: 100, Min: 1, Max: 100, Median: 50, Mean: 50.5, P90: 90, P99: 99, MAD: 25},
			ciLo: 40, ciHi: 60,
		},
		{
			name: "one outlier moves the mean, not the median",
			in:   outliers,
			want: Summary{N: 100, Min: 10, Max: 1_000_000, Median: 10, Mean: 10009.9, P90: 10, P99: 10, MAD: 0},
			ciLo: 10, ciHi: 10, ciExact: true,
		},
		{
			name: "one sample",
			in:   []int64{7},
			want: Summary{N: 1, Min: 7, Max: 7, Median: 7, Mean: 7, P90: 7, P99: 7, MAD: 0},
			ciLo: 7, ciHi: 7, ciExact: true,
		},
		{
			name: "negative values after baseline subtraction",
			in:   []int64{-3, 2, -1},
			want: Summary{N: 3, Min: -3, Max: 2, Median: -1, Mean: -2.0 / 3, P90: 2, P99: 2, MAD: 2},
			ciLo: -3, ciHi: 2,
		},
		{
			name: "even count takes the lower middle",
			in:   []int64{4, 1, 3, 2},
			want: Summary{N: 4, Min: 1, Max: 4, Median: 2, Mean: 2.5, P90: 4, P99: 4, MAD: 1},
			ciLo: 1, ciHi: 4,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := slices.Clone(tt.in)
			got, err := Summarize(in)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(in, tt.in) {
				t.Errorf("Summarize modified its input")
			}
			ci := [2]int64{got.CILow, got.CIHigh}
			got.CILow, got.CIHigh = 0, 0
			if math.Abs(got.Mean-tt.want.Mean) < 1e-9 {
				got.Mean = tt.want.Mean
			}
			if got != tt.want {
				t.Errorf("Summarize:\n got %v\nwant %v", got, tt.want)
			}
			if ci[0] > ci[1] || ci[0] < tt.ciLo || ci[1] > tt.ciHi {
				t.Errorf("95%% interval on the median [%d, %d], want within [%d, %d]", ci[0], ci[1], tt.ciLo, tt.ciHi)
			}
			if tt.ciExact && (ci[0] != tt.ciLo || ci[1] != tt.ciHi) {
				t.Errorf("95%% interval on the median [%d, %d], want [%d, %d]", ci[0], ci[1], tt.ciLo, tt.ciHi)
			}
			if ci[0] > tt.want.Median || ci[1] < tt.want.Median {
				t.Errorf("95%% interval [%d, %d] does not contain the median %d", ci[0], ci[1], tt.want.Median)
			}
		})
	}
}

func TestSummarizeEmpty(t *testing.T) {
	for _, in := range [][]int64{nil, {}} {
		if _, err := Summarize(in); !errors.Is(err, ErrNoSamples) {
			t.Errorf("Summarize(%v) error = %v, want ErrNoSamples", in, err)
		}
	}
}

func TestBootstrapDeterministic(t *testing.T) {
	in := []int64{5, 9, 1, 13, 2, 2, 8, 40, 7, 7, 6, 3}
	a, _ := Summarize(in)
	b, _ := Summarize(in)
	if a != b {
		t.Errorf("two runs differ: %v and %v", a, b)
	}
}

// TestBootstrapNarrows checks that the interval narrows as the sample grows,
// which a broken resampler (always the same index, say) would not do.
func TestBootstrapNarrows(t *testing.T) {
	width := func(reps int) int64 {
		var in []int64
		for range reps {
			in = append(in, seq(1, 100)...)
		}
		s, err := Summarize(in)
		if err != nil {
			t.Fatal(err)
		}
		return s.CIHigh - s.CILow
	}
	small, large := width(1), width(20)
	if small <= 0 || large >= small {
		t.Errorf("interval width %d for 100 samples, %d for 2000: want 0 < large < small", small, large)
	}
}

func TestPercentile(t *testing.T) {
	s := seq(1, 10)
	for _, tt := range []struct {
		p    float64
		want int64
	}{
		{0, 1}, {1, 1}, {10, 1}, {11, 2}, {50, 5}, {90, 9}, {99, 10}, {100, 10},
	} {
		if got := Percentile(s, tt.p); got != tt.want {
			t.Errorf("Percentile(1..10, %v) = %d, want %d", tt.p, got, tt.want)
		}
	}
}
