package main

import "fmt"

// istiodRun measures amesh against a real istiod; see istiod_real.go.
func istiodRun(n int, cfg runConfig) (row, error) {
	return row{}, fmt.Errorf("real-istiod benchmark not implemented yet (n=%d)", n)
}
