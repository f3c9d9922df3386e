package fleet

import "testing"

func TestCounterDelta(t *testing.T) {
	tests := []struct {
		name      string
		prev, cur float64
		want      float64
	}{
		{"unchanged", 100, 100, 0},
		{"grew", 100, 150, 50},
		{"from zero", 0, 7, 7},
		{"restarted worker counts from zero", 1200, 30, 30},
		{"restarted to zero", 1200, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := CounterDelta(tt.prev, tt.cur); got != tt.want {
				t.Errorf("CounterDelta(%v, %v) = %v, want %v", tt.prev, tt.cur, got, tt.want)
			}
		})
	}
}
