package audit

import (
	"fmt"
	"math"
	"strings"

	"github.com/apitoken/caddy-apitoken/event"
)

// classSet is a set of classes as bits.
type classSet uint8

const (
	bitAdmin classSet = 1 << iota
	bitFailure
	bitDenied
	bitSuccess

	defaultClasses = bitAdmin | bitFailure | bitDenied
)

// allClasses lists the classes in their canonical order.
var allClasses = [...]struct {
	class event.Class
	bit   classSet
}{
	{event.ClassAdmin, bitAdmin},
	{event.ClassFailure, bitFailure},
	{event.ClassDenied, bitDenied},
	{event.ClassSuccess, bitSuccess},
}

// classBit returns c's bit, or 0 for an unknown class.
func classBit(c event.Class) classSet {
	switch c {
	case event.ClassAdmin:
		return bitAdmin
	case event.ClassFailure:
		return bitFailure
	case event.ClassDenied:
		return bitDenied
	case event.ClassSuccess:
		return bitSuccess
	}
	return 0
}

// Selection says which events are recorded: a set of classes, and the
// fraction of success events kept when successes are selected.
//
// The zero Selection is the default one: admin, failure and denied events,
// no successes.
type Selection struct {
	// classes is the chosen set; 0 means the default set.
	classes classSet
	// sample is the fraction of success events kept, in (0,1); 0 keeps
	// them all.
	sample float64
}

// ParseSelection builds a Selection from class names and a success sampling
// fraction. No classes means the default: admin, failure and denied.
// sampleSuccess is the fraction of success events kept when "success" is
// selected; 0 and 1 both keep them all, a value in between keeps that
// fraction at random, anything else is an error.
func ParseSelection(classes []string, sampleSuccess float64) (Selection, error) {
	var s Selection
	for _, name := range classes {
		b := classBit(event.Class(name))
		if b == 0 {
			return Selection{}, fmt.Errorf("parsing audit classes: unknown class %q (want one of %s)", name, classNames())
		}
		s.classes |= b
	}
	if math.IsNaN(sampleSuccess) || sampleSuccess < 0 || sampleSuccess > 1 {
		return Selection{}, fmt.Errorf("parsing audit success sampling: fraction %v is not between 0 and 1", sampleSuccess)
	}
	if sampleSuccess < 1 {
		s.sample = sampleSuccess
	}
	return s, nil
}

// classNames lists the class names for error messages.
func classNames() string {
	names := make([]string, len(allClasses))
	for i, c := range allClasses {
		names[i] = string(c.class)
	}
	return strings.Join(names, ", ")
}

// set returns the effective class set.
func (s Selection) set() classSet {
	if s.classes == 0 {
		return defaultClasses
	}
	return s.classes
}

// Wants reports whether events of type t are selected, before sampling.
func (s Selection) Wants(t event.Type) bool {
	return s.wantsClass(t.Class())
}

// wantsClass reports whether events of class c are selected.
func (s Selection) wantsClass(c event.Class) bool {
	b := classBit(c)
	return b != 0 && s.set()&b != 0
}

// Keep reports whether an event of type t is recorded: it is selected and,
// for a success, it survives sampling. rnd returns a number in [0,1) and is
// called only when sampling applies.
func (s Selection) Keep(t event.Type, rnd func() float64) bool {
	c := t.Class()
	if !s.wantsClass(c) {
		return false
	}
	return c != event.ClassSuccess || s.sample == 0 || rnd() < s.sample
}

// Classes lists the selected classes in canonical order.
func (s Selection) Classes() []event.Class {
	set := s.set()
	var out []event.Class
	for _, c := range allClasses {
		if set&c.bit != 0 {
			out = append(out, c.class)
		}
	}
	return out
}

// SampleSuccess is the fraction of selected success events kept (1 keeps
// them all).
func (s Selection) SampleSuccess() float64 {
	if s.sample == 0 {
		return 1
	}
	return s.sample
}
