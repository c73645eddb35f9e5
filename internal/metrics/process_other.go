//go:build !linux

package metrics

// processFamilies is empty where there is no /proc to read the process_*
// metrics from.
func processFamilies(bootTime func() (float64, error)) ([]family, error) { return nil, nil }

func readBootTime() (float64, error) { return 0, nil }
