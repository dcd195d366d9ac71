package cache

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

var sizeUnits = map[string]float64{
	"": 1, "b": 1,
	"k": 1e3, "kb": 1e3, "m": 1e6, "mb": 1e6, "g": 1e9, "gb": 1e9, "t": 1e12, "tb": 1e12, "p": 1e15, "pb": 1e15,
	"ki": 1 << 10, "kib": 1 << 10, "mi": 1 << 20, "mib": 1 << 20, "gi": 1 << 30, "gib": 1 << 30,
	"ti": 1 << 40, "tib": 1 << 40, "pi": 1 << 50, "pib": 1 << 50,
}

// ParseSize parses a byte size: a non-negative decimal number and an
// optional unit, case-insensitive: B; KB, MB, GB, TB, PB (powers of 1000,
// also K, M, G…); KiB, MiB, GiB, TiB, PiB (powers of 1024). "1.5GiB" is
// 1610612736. Fractional bytes are rounded to the nearest byte.
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := strings.IndexFunc(t, func(r rune) bool { return !(r >= '0' && r <= '9' || r == '.') })
	num, unit := t, ""
	if i >= 0 {
		num, unit = t[:i], strings.ToLower(strings.TrimSpace(t[i:]))
	}
	mult, ok := sizeUnits[unit]
	if num == "" || !ok {
		return 0, fmt.Errorf("invalid size %q (want e.g. 500MB, 10GB, 1.5GiB)", s)
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return 0, fmt.Errorf("invalid size %q (want e.g. 500MB, 10GB, 1.5GiB)", s)
	}
	b := math.Round(v * mult)
	if b >= math.MaxInt64 {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	return int64(b), nil
}

var ageUnits = map[string]time.Duration{
	"ms": time.Millisecond, "s": time.Second, "m": time.Minute, "h": time.Hour,
	"d": 24 * time.Hour, "w": 7 * 24 * time.Hour,
}

// ParseAge parses a duration made of number+unit terms, units ms, s, m, h,
// d (24h) and w (7d): "30d", "12h", "90m", "1d12h", "1.5h". "0" is zero.
func ParseAge(s string) (time.Duration, error) {
	t := strings.TrimSpace(s)
	if t == "0" {
		return 0, nil
	}
	bad := fmt.Errorf("invalid age %q (want e.g. 30d, 12h, 90m)", s)
	if t == "" {
		return 0, bad
	}
	var total float64
	for t != "" {
		i := strings.IndexFunc(t, func(r rune) bool { return !(r >= '0' && r <= '9' || r == '.') })
		if i <= 0 {
			return 0, bad
		}
		v, err := strconv.ParseFloat(t[:i], 64)
		if err != nil {
			return 0, bad
		}
		t = t[i:]
		j := strings.IndexFunc(t, func(r rune) bool { return r >= '0' && r <= '9' || r == '.' })
		if j < 0 {
			j = len(t)
		}
		unit, ok := ageUnits[strings.ToLower(t[:j])]
		if !ok {
			return 0, bad
		}
		t = t[j:]
		total += v * float64(unit)
	}
	if total >= math.MaxInt64 {
		return 0, fmt.Errorf("age %q is too long", s)
	}
	return time.Duration(math.Round(total)), nil
}
