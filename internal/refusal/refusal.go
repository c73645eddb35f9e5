// Package refusal is the one way to say that an action must not be done:
// the target refused it for a reason that retrying cannot change (the
// account became verified, the address is protected, a dry run). A refused
// action is booked as such and never retried; any other error is an outage
// and the action waits for another attempt.
//
// The package holds one error type and nothing else, so that every package
// that refuses (mediagoblin, banner, worker) and every one that decides
// (worker, restore) agree without importing each other.
package refusal

import "errors"

// Error marks Err as a refusal.
type Error struct{ Err error }

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// New returns a refusal with the message text; callers keep it as a
// sentinel and compare with errors.Is.
func New(text string) error { return &Error{Err: errors.New(text)} }

// Wrap marks err as a refusal; nil stays nil.
func Wrap(err error) error {
	if err == nil {
		return nil
	}
	return &Error{Err: err}
}

// Is reports whether err, or any error it wraps, is a refusal.
func Is(err error) bool {
	var r *Error
	return errors.As(err, &r)
}
