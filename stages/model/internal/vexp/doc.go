// Package vexp evaluates the float32 exponential of package model over
// slices, with AVX2 and FMA on amd64 where available.
package vexp
