//go:build !linux

package metrics

// processFamilies is empty where there is no /proc to read the process_*
// metrics from.
func processFamilies() ([]family, error) { return nil, nil }
