package config

import (
	"fmt"
	"sort"

	"github.com/hashicorp/hcl/v2"
)

// sortedAttrs returns attributes in source order.
func sortedAttrs(attrs hcl.Attributes) []*hcl.Attribute {
	out := make([]*hcl.Attribute, 0, len(attrs))
	for _, a := range attrs {
		out = append(out, a)
	}
	sortByStart(out, func(a *hcl.Attribute) hcl.Pos { return a.Range.Start })
	return out
}

func sortByStart[T any](xs []T, pos func(T) hcl.Pos) {
	sort.SliceStable(xs, func(i, j int) bool { return pos(xs[i]).Byte < pos(xs[j]).Byte })
}

// nameSuggestion returns the name in names closest to given, or "" when
// none is close enough (edit distance below 3, as hcl itself suggests).
func nameSuggestion(given string, names []string) string {
	best, bestDist := "", 3
	for _, n := range names {
		if d := editDistance(given, n); d < bestDist {
			best, bestDist = n, d
		}
	}
	return best
}

// didYouMean returns " Did you mean "x"?" or "".
func didYouMean(given string, names []string) string {
	if s := nameSuggestion(given, names); s != "" {
		return fmt.Sprintf(" Did you mean %q?", s)
	}
	return ""
}

// editDistance is the Levenshtein distance between a and b, in runes.
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(rb)]
}

// bySource orders diagnostics by their position, stably. hcl's Content
// reports unexpected attributes in map order; sorting keeps the output the
// same from run to run.
func bySource(diags hcl.Diagnostics) hcl.Diagnostics {
	sort.SliceStable(diags, func(i, j int) bool {
		a, b := diags[i].Subject, diags[j].Subject
		switch {
		case a == nil || b == nil:
			return a == nil && b != nil
		case a.Filename != b.Filename:
			return a.Filename < b.Filename
		}
		return a.Start.Byte < b.Start.Byte
	})
	return diags
}
