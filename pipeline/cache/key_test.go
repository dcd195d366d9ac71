package cache

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

var rewrite = flag.Bool("rewrite", false, "rewrite golden files in testdata/")

func fixedParts() KeyParts {
	return KeyParts{
		FormatVersion: FormatVersion,
		StageType:     "reference_logprobs",
		PluginSHA256:  strings.Repeat("ab", 32),
		PluginVersion: "0.1.0",
		Config:        json.RawMessage(`{"model":"models/stories260K.bin","batch_size":8,"beta":0.1}`),
		Inputs:        []string{strings.Repeat("01", 32), strings.Repeat("02", 32)},
		Files:         map[string]string{"model": strings.Repeat("cd", 32), "tokenizer": strings.Repeat("ef", 32)},
	}
}

func TestKeyGolden(t *testing.T) {
	k := fixedParts()
	var b strings.Builder
	b.WriteString("key " + k.Key() + "\n")
	for _, c := range k.Components() {
		b.WriteString(c.Name + " " + c.Value + "\n")
	}
	got := b.String()
	golden := filepath.Join("testdata", "key.golden")
	if *rewrite {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run with -rewrite to create it)", err)
	}
	if got != string(want) {
		t.Fatalf("key encoding changed (bump FormatVersion, then -rewrite):\ngot:\n%s\nwant:\n%s", got, want)
	}
	if len(k.Key()) != 64 || k.Key() != strings.ToLower(k.Key()) {
		t.Fatalf("key %q is not lowercase hex sha256", k.Key())
	}
}

func TestKeyChangesWithEveryComponent(t *testing.T) {
	base := fixedParts()
	mutations := map[string]func(k *KeyParts){
		"format version": func(k *KeyParts) { k.FormatVersion++ },
		"stage type":     func(k *KeyParts) { k.StageType = "dpo" },
		"plugin sha":     func(k *KeyParts) { k.PluginSHA256 = strings.Repeat("ac", 32) },
		"plugin version": func(k *KeyParts) { k.PluginVersion = "0.1.1" },
		"config value": func(k *KeyParts) {
			k.Config = json.RawMessage(`{"model":"models/stories260K.bin","batch_size":8,"beta":0.2}`)
		},
		"config empty":     func(k *KeyParts) { k.Config = nil },
		"input changed":    func(k *KeyParts) { k.Inputs = []string{strings.Repeat("01", 32), strings.Repeat("03", 32)} },
		"inputs reordered": func(k *KeyParts) { k.Inputs = []string{k.Inputs[1], k.Inputs[0]} },
		"input dropped":    func(k *KeyParts) { k.Inputs = k.Inputs[:1] },
		"file digest": func(k *KeyParts) {
			k.Files = map[string]string{"model": strings.Repeat("ce", 32), "tokenizer": strings.Repeat("ef", 32)}
		},
		"file renamed": func(k *KeyParts) {
			k.Files = map[string]string{"weights": strings.Repeat("cd", 32), "tokenizer": strings.Repeat("ef", 32)}
		},
		"file added": func(k *KeyParts) {
			k.Files = map[string]string{"model": strings.Repeat("cd", 32), "tokenizer": strings.Repeat("ef", 32), "x": "y"}
		},
		"boundary stage/sha":  func(k *KeyParts) { k.StageType += k.PluginSHA256[:1]; k.PluginSHA256 = k.PluginSHA256[1:] },
		"input becomes files": func(k *KeyParts) { k.Inputs = nil; k.Files["inputs[0]"] = strings.Repeat("01", 32) },
	}
	seen := map[string]string{base.Key(): "base"}
	for name, mut := range mutations {
		t.Run(name, func(t *testing.T) {
			k := fixedParts()
			mut(&k)
			key := k.Key()
			if prev, dup := seen[key]; dup {
				t.Fatalf("key equals the key of %q", prev)
			}
			seen[key] = name
		})
	}
}

func TestKeyIgnoresConfigSpelling(t *testing.T) {
	a, b := fixedParts(), fixedParts()
	b.Config = json.RawMessage(" {\"beta\": 1e-1, \"batch_size\": 8.0,\n \"model\": \"models/stories260K.bin\"}")
	if a.Key() != b.Key() {
		t.Fatal("equivalent configs give different keys")
	}
}

func TestCanonical(t *testing.T) {
	cases := []struct{ in, want string }{
		{`{"b":1,"a":[1.0]}`, `{"a":[1],"b":1}`},
		{`{"a":[1],"b":1}`, `{"a":[1],"b":1}`},
		{` { "z" : null , "y" : [ true , false ] } `, `{"y":[true,false],"z":null}`},
		{`1.50`, `1.5`},
		{`-0.0`, `0`},
		{`1e2`, `100`},
		{`100E-2`, `1`},
		{`0.000001`, `0.000001`},
		{`1e-7`, `1e-7`},
		{`123456789012345678901234567890`, `1.2345678901234567890123456789e+29`},
		{`1e20`, `100000000000000000000`},
		{`1e21`, `1e+21`},
		{`-2.5e-3`, `-0.0025`},
		{`0.1`, `0.1`},
		{`"a\u0041<>&\u00e9\n"`, `"aA<>&é\n"`},
		{`{"é":1,"e":2,"E":3}`, `{"E":3,"e":2,"é":1}`},
		{`[]`, `[]`},
		{`{}`, `{}`},
	}
	for _, c := range cases {
		got, err := Canonical(json.RawMessage(c.in))
		if err != nil {
			t.Errorf("Canonical(%s): %v", c.in, err)
			continue
		}
		if string(got) != c.want {
			t.Errorf("Canonical(%s) = %s, want %s", c.in, got, c.want)
		}
	}
	for _, bad := range []string{``, `{`, `{"a":1,"a":2}`, `1 2`, `[1,]`, `{"a"}`, `nul`, `1e99999999999999999999`} {
		if got, err := Canonical(json.RawMessage(bad)); err == nil {
			t.Errorf("Canonical(%q) = %s, want an error", bad, got)
		}
	}
}

func FuzzCanonical(f *testing.F) {
	for _, s := range []string{`{"b":1,"a":[1.0]}`, `[1e5,-0.0,"x\u0000"]`, `{"a":{"b":{"c":[null,true]}}}`, `12.5e-3`, `"\ud800"`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Canonical(data)
		if err != nil {
			return
		}
		if !json.Valid(c) {
			t.Fatalf("Canonical(%q) = %q is not valid JSON", data, c)
		}
		c2, err := Canonical(c)
		if err != nil {
			t.Fatalf("Canonical of canonical %q: %v", c, err)
		}
		if string(c2) != string(c) {
			t.Fatalf("not idempotent: %q -> %q -> %q", data, c, c2)
		}
		// Same meaning, as far as encoding/json can tell (float64 numbers).
		var a, b any
		if json.Unmarshal(data, &a) == nil && json.Unmarshal(c, &b) == nil {
			if !reflect.DeepEqual(a, b) { // -0 == 0 for floats
				t.Fatalf("meaning changed: %q -> %q", data, c)
			}
		}
	})
}
