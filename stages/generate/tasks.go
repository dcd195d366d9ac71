package generate

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
)

// example is one synthetic problem: a prompt, its correct answer and a
// plausible wrong answer made by a systematic error.
type example struct {
	Prompt, Correct, Wrong string
}

// task makes examples; the stage drops repeated prompts, so that a
// held-out prompt never appears in the train split.
type task struct {
	name        string
	description string
	make        func(rng *rand.Rand, o *options) example
}

var tasks = []task{
	{"reverse", `"rev abc=" -> "cba"; wrong answer: the input copied unreversed ("abc").`, makeReverse},
	{"sort", `"sort cab=" -> "abc"; wrong answer: the letters sorted in descending order ("cba").`, makeSort},
	{"add", `"12+35=" -> "47"; wrong answer: the sum plus one ("48").`, makeAdd},
	{"upper", `"up abc=" -> "ABC"; wrong answer: the input copied unchanged ("abc").`, makeUpper},
}

// TaskNames lists the task names.
func TaskNames() []string {
	out := make([]string, len(tasks))
	for i, t := range tasks {
		out[i] = t.name
	}
	return out
}

func lookupTask(name string) (task, bool) {
	for _, t := range tasks {
		if t.name == name {
			return t, true
		}
	}
	return task{}, false
}

// randWord draws a word of distinct letters, so that every letter of the
// answer has one source position in the prompt.
func randWord(rng *rand.Rand, o *options) string {
	n := o.MinLen + rng.IntN(o.MaxLen-o.MinLen+1)
	letters := []byte(o.Alphabet)
	for i := 0; i < n; i++ {
		j := i + rng.IntN(len(letters)-i)
		letters[i], letters[j] = letters[j], letters[i]
	}
	return string(letters[:n])
}

func reverseString(s string) string {
	b := []byte(s)
	slices.Reverse(b)
	return string(b)
}

func makeReverse(rng *rand.Rand, o *options) example {
	w := randWord(rng, o)
	return example{Prompt: "rev " + w + "=", Correct: reverseString(w), Wrong: w}
}

func makeSort(rng *rand.Rand, o *options) example {
	for {
		w := randWord(rng, o)
		b := []byte(w)
		slices.Sort(b)
		asc := string(b)
		desc := reverseString(asc)
		if asc == desc {
			continue
		}
		return example{Prompt: "sort " + w + "=", Correct: asc, Wrong: desc}
	}
}

func makeAdd(rng *rand.Rand, o *options) example {
	hi := 1
	for i := 0; i < o.Digits; i++ {
		hi *= 10
	}
	a, b := rng.IntN(hi), rng.IntN(hi)
	return example{
		Prompt:  fmt.Sprintf("%d+%d=", a, b),
		Correct: strconv.Itoa(a + b),
		Wrong:   strconv.Itoa(a + b + 1),
	}
}

func makeUpper(rng *rand.Rand, o *options) example {
	for {
		w := randWord(rng, o)
		u := strings.ToUpper(w)
		if u == w {
			continue
		}
		return example{Prompt: "up " + w + "=", Correct: u, Wrong: w}
	}
}
