package model

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func equalParams(t *testing.T, a, b *Model) {
	t.Helper()
	if a.Config != b.Config {
		t.Fatalf("config differs:\n%+v\n%+v", a.Config, b.Config)
	}
	if len(a.Params) != len(b.Params) {
		t.Fatalf("param count %d vs %d", len(a.Params), len(b.Params))
	}
	for i := range a.Params {
		if math.Float32bits(a.Params[i]) != math.Float32bits(b.Params[i]) {
			t.Fatalf("param %d differs: %v vs %v", i, a.Params[i], b.Params[i])
		}
	}
}

func TestRoundTripHF(t *testing.T) {
	for _, cfg := range []Config{tinyConfig(RopeHalf, true, false), tinyConfig(RopeHalf, false, true), tinyConfig(RopeAdjacent, false, false)} {
		m, err := New(cfg, 4)
		if err != nil {
			t.Fatal(err)
		}
		randomizeForTest(m, 8)
		dir := t.TempDir()
		if err := m.SaveHF(dir); err != nil {
			t.Fatal(err)
		}
		got, err := Load(dir)
		if err != nil {
			t.Fatal(err)
		}
		equalParams(t, m, got)
		entries, _ := os.ReadDir(dir)
		if len(entries) != 2 {
			t.Fatalf("SaveHF left %d files (temp files?)", len(entries))
		}
	}
}

func TestRoundTripLlama2c(t *testing.T) {
	for _, tied := range []bool{true, false} {
		m, err := New(tinyConfig(RopeAdjacent, false, tied), 4)
		if err != nil {
			t.Fatal(err)
		}
		randomizeForTest(m, 8)
		p := filepath.Join(t.TempDir(), "m.bin")
		if err := m.SaveLlama2c(p); err != nil {
			t.Fatal(err)
		}
		got, err := Load(p)
		if err != nil {
			t.Fatal(err)
		}
		equalParams(t, m, got)
	}
	m, _ := New(tinyConfig(RopeHalf, false, true), 1)
	if err := m.SaveLlama2c(filepath.Join(t.TempDir(), "x.bin")); err == nil {
		t.Fatal("rotate-half model saved as llama2.c")
	}
}

// TestLlama2cLegacyUntied writes a legacy file by hand (negative vocab,
// freq_cis, classifier last) and checks the loader reads it like v1.
func TestLlama2cLegacyUntied(t *testing.T) {
	cfg := tinyConfig(RopeAdjacent, false, false)
	m, _ := New(cfg, 4)
	randomizeForTest(m, 2)
	l := &m.lay
	var buf bytes.Buffer
	for _, v := range []int32{int32(cfg.Dim), int32(cfg.HiddenDim), int32(cfg.NLayers), int32(cfg.NHeads), int32(cfg.NKVHeads), -int32(cfg.VocabSize), int32(cfg.SeqLen)} {
		binary.Write(&buf, binary.LittleEndian, v)
	}
	seg := func(off, n int) { writeF32(&buf, m.Params[off:off+n]) }
	nl := cfg.NLayers
	seg(l.tokEmb, l.v*l.d)
	seg(l.rmsAtt, nl*l.d)
	seg(l.wq, nl*l.sizeWq)
	seg(l.wk, nl*l.sizeWkv)
	seg(l.wv, nl*l.sizeWkv)
	seg(l.wo, nl*l.sizeWq)
	seg(l.rmsFFN, nl*l.d)
	seg(l.w1, nl*l.sizeW1)
	seg(l.w2, nl*l.sizeW1)
	seg(l.w3, nl*l.sizeW1)
	seg(l.rmsFinal, l.d)
	writeF32(&buf, make([]float32, cfg.SeqLen*cfg.HeadSize()))
	seg(l.wcls, l.v*l.d)
	p := filepath.Join(t.TempDir(), "legacy.bin")
	os.WriteFile(p, buf.Bytes(), 0o644)
	got, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	equalParams(t, m, got)
}

func TestSafetensorsHeaderGolden(t *testing.T) {
	ts := []namedTensor{
		{"a.weight", []int{2, 3}, make([]float32, 6)},
		{"b", []int{1}, []float32{1.5}},
	}
	var buf bytes.Buffer
	if err := writeSafetensors(&buf, map[string]string{"format": "pt"}, ts); err != nil {
		t.Fatal(err)
	}
	b := buf.Bytes()
	want := `{"__metadata__":{"format":"pt"},"a.weight":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},"b":{"dtype":"F32","shape":[1],"data_offsets":[24,28]}}`
	for len(want)%8 != 0 {
		want += " "
	}
	n := binary.LittleEndian.Uint64(b)
	if int(n) != len(want) || string(b[8:8+n]) != want {
		t.Fatalf("header:\n%q (len %d)\nwant\n%q (len %d)", b[8:8+n], n, want, len(want))
	}
	if len(b) != 8+len(want)+28 || math.Float32frombits(binary.LittleEndian.Uint32(b[len(b)-4:])) != 1.5 {
		t.Fatalf("data layout wrong: %d bytes", len(b))
	}
	h, err := ParseSafetensorsHeader(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	if h.Metadata["format"] != "pt" || h.Tensors["b"].Begin != int64(8+len(want)+24) || h.Tensors["a.weight"].Shape[1] != 3 {
		t.Fatalf("parsed header %+v", h)
	}
}

func stBytes(hdr string, data int) []byte {
	var b bytes.Buffer
	binary.Write(&b, binary.LittleEndian, uint64(len(hdr)))
	b.WriteString(hdr)
	b.Write(make([]byte, data))
	return b.Bytes()
}

func TestSafetensorsBadFiles(t *testing.T) {
	lying := make([]byte, 16)
	binary.LittleEndian.PutUint64(lying, 1<<40)
	cases := []struct {
		name, want string
		b          []byte
	}{
		{"empty", "too short", nil},
		{"header length beyond file", "exceeds", lying},
		{"truncated data", "truncated", stBytes(`{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}`, 8)},
		{"shape mismatch", "needs 16 bytes", stBytes(`{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,12]}}`, 16)},
		{"huge shape", "bad shape", stBytes(`{"a":{"dtype":"F32","shape":[4611686018427387904,4611686018427387904],"data_offsets":[0,16]}}`, 16)},
		{"unknown dtype", "unknown dtype", stBytes(`{"a":{"dtype":"Q4","shape":[4],"data_offsets":[0,16]}}`, 16)},
		{"overlap", "overlap", stBytes(`{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}`, 16)},
		{"bad json", "JSON", stBytes(`{"a":`, 16)},
		{"negative offsets", "bad data_offsets", stBytes(`{"a":{"dtype":"F32","shape":[0],"data_offsets":[5,1]}}`, 16)},
	}
	for _, c := range cases {
		_, err := ParseSafetensorsHeader(bytes.NewReader(c.b), int64(len(c.b)))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one containing %q", c.name, err, c.want)
		}
	}
}

func TestLoadBadFiles(t *testing.T) {
	m, _ := New(tinyConfig(RopeAdjacent, false, true), 4)
	dir := t.TempDir()
	good := filepath.Join(dir, "good.bin")
	if err := m.SaveLlama2c(good); err != nil {
		t.Fatal(err)
	}
	full, _ := os.ReadFile(good)
	hfDir := filepath.Join(dir, "hf")
	if err := m.SaveHF(hfDir); err != nil {
		t.Fatal(err)
	}
	st, _ := os.ReadFile(filepath.Join(hfDir, "model.safetensors"))
	huge := append([]byte(nil), full[:256]...)
	binary.LittleEndian.PutUint32(huge[8+4*5:], 1<<24) // vocab 16M: promises far more than the file
	legacyLie := make([]byte, 28)
	for i, v := range []int32{4096, 11008, 32, 32, 32, 32000, 2048} {
		binary.LittleEndian.PutUint32(legacyLie[4*i:], uint32(v))
	}
	cases := []struct {
		name, want string
		write      func(p string)
	}{
		{"llama2c truncated", "truncated", func(p string) { os.WriteFile(p, full[:len(full)-10], 0o644) }},
		{"llama2c header only", "truncated", func(p string) { os.WriteFile(p, full[:256], 0o644) }},
		{"llama2c lying vocab", "truncated", func(p string) { os.WriteFile(p, huge, 0o644) }},
		{"legacy lying header", "truncated", func(p string) { os.WriteFile(p, legacyLie, 0o644) }},
		{"tiny file", "too short", func(p string) { os.WriteFile(p, []byte{1, 2, 3}, 0o644) }},
		{"bad version", "unsupported version", func(p string) {
			b := append([]byte(nil), full...)
			b[4] = 2
			os.WriteFile(p, b, 0o644)
		}},
		{"trailing bytes", "trailing", func(p string) { os.WriteFile(p, append(append([]byte(nil), full...), 0, 0, 0, 0), 0o644) }},
		{"hf truncated", "truncated", func(p string) {
			os.MkdirAll(p, 0o755)
			cj, _ := os.ReadFile(filepath.Join(hfDir, "config.json"))
			os.WriteFile(filepath.Join(p, "config.json"), cj, 0o644)
			os.WriteFile(filepath.Join(p, "model.safetensors"), st[:len(st)-4], 0o644)
		}},
		{"hf missing tensor", "missing", func(p string) {
			os.MkdirAll(p, 0o755)
			var c map[string]any
			cj, _ := os.ReadFile(filepath.Join(hfDir, "config.json"))
			json.Unmarshal(cj, &c)
			c["num_hidden_layers"] = 3
			cj, _ = json.Marshal(c)
			os.WriteFile(filepath.Join(p, "config.json"), cj, 0o644)
			os.WriteFile(filepath.Join(p, "model.safetensors"), st, 0o644)
		}},
		{"hf no weights", "neither", func(p string) {
			os.MkdirAll(p, 0o755)
			cj, _ := os.ReadFile(filepath.Join(hfDir, "config.json"))
			os.WriteFile(filepath.Join(p, "config.json"), cj, 0o644)
		}},
	}
	for i, c := range cases {
		p := filepath.Join(dir, "case", string(rune('a'+i)))
		os.MkdirAll(filepath.Dir(p), 0o755)
		c.write(p)
		_, err := Load(p)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one containing %q", c.name, err, c.want)
		}
		if err != nil && !strings.Contains(err.Error(), filepath.Base(p)) && !strings.Contains(err.Error(), "model.safetensors") {
			t.Errorf("%s: error %q does not name the file", c.name, err)
		}
	}
}

// TestLoadShardedBF16 writes a two-shard checkpoint with BF16 and F16
// tensors and an index, as transformers does for large models.
func TestLoadShardedBF16(t *testing.T) {
	cfg := tinyConfig(RopeHalf, true, false)
	m, _ := New(cfg, 4)
	randomizeForTest(m, 1)
	// round params to bf16 so the comparison is exact
	for i, v := range m.Params {
		m.Params[i] = math.Float32frombits(math.Float32bits(v) &^ 0xffff)
	}
	dir := t.TempDir()
	if err := m.SaveHF(dir); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(dir, "model.safetensors"))
	ts := m.hfTensors(m.Params)
	half := len(ts) / 2
	weightMap := map[string]string{}
	for s, part := range [][]namedTensor{ts[:half], ts[half:]} {
		name := []string{"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"}[s]
		var hdr strings.Builder
		hdr.WriteString("{")
		var data bytes.Buffer
		for i, nt := range part {
			if i > 0 {
				hdr.WriteString(",")
			}
			dt := "BF16"
			if i%2 == 1 {
				dt = "F32"
			}
			start := data.Len()
			for _, v := range nt.data {
				if dt == "BF16" {
					binary.Write(&data, binary.LittleEndian, uint16(math.Float32bits(v)>>16))
				} else {
					binary.Write(&data, binary.LittleEndian, v)
				}
			}
			sh, _ := json.Marshal(nt.shape)
			hdr.WriteString(`"` + nt.name + `":{"dtype":"` + dt + `","shape":` + string(sh) + `,"data_offsets":[` + itoa(start) + `,` + itoa(data.Len()) + `]}`)
			weightMap[nt.name] = name
		}
		hdr.WriteString("}")
		b := stBytes(hdr.String(), 0)
		b = append(b, data.Bytes()...)
		os.WriteFile(filepath.Join(dir, name), b, 0o644)
	}
	idx, _ := json.Marshal(map[string]any{"metadata": map[string]any{}, "weight_map": weightMap})
	os.WriteFile(filepath.Join(dir, "model.safetensors.index.json"), idx, 0o644)
	got, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	equalParams(t, m, got)
}

func itoa(i int) string { b, _ := json.Marshal(i); return string(b) }

func TestF16(t *testing.T) {
	for _, c := range []struct {
		h uint16
		f float32
	}{{0x3c00, 1}, {0xc000, -2}, {0x0001, 5.9604645e-08}, {0x7bff, 65504}, {0, 0}, {0x3555, 0.33325195}} {
		if g := f16ToF32(c.h); g != c.f {
			t.Errorf("f16 %#x: %v, want %v", c.h, g, c.f)
		}
	}
}

func FuzzSafetensorsHeader(f *testing.F) {
	var good bytes.Buffer
	writeSafetensors(&good, map[string]string{"format": "pt"}, []namedTensor{{"w", []int{2, 2}, []float32{1, 2, 3, 4}}})
	f.Add(good.Bytes())
	f.Add(stBytes(`{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}`, 8))
	f.Add(stBytes(`{"a":{"dtype":"BF16","shape":[2,2],"data_offsets":[0,8]},"__metadata__":{"x":"y"}}`, 8))
	f.Add([]byte{255, 255, 255, 255, 255, 255, 255, 127})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := ParseSafetensorsHeader(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			return
		}
		for _, ts := range h.Tensors {
			if ts.Begin < h.HeaderSize || ts.End > int64(len(b)) || ts.End < ts.Begin {
				t.Fatalf("accepted out-of-range tensor %+v in %d-byte file", ts, len(b))
			}
			if ts.DType == "F32" || ts.DType == "BF16" || ts.DType == "F16" {
				dst := make([]float32, (ts.End-ts.Begin)/int64(dtypeSize(ts.DType)))
				if err := readTensorF32(bytes.NewReader(b), ts, dst); err != nil {
					t.Fatalf("reading accepted tensor: %v", err)
				}
			}
		}
	})
}

func FuzzLlama2cHeader(f *testing.F) {
	m, _ := New(Config{Dim: 4, HiddenDim: 6, NLayers: 1, NHeads: 2, NKVHeads: 1, VocabSize: 5, SeqLen: 4,
		NormEps: 1e-5, RopeTheta: 10000, TiedEmbeddings: true, BOS: 1, EOS: 2}, 1)
	p := filepath.Join(f.TempDir(), "m.bin")
	m.SaveLlama2c(p)
	v1, _ := os.ReadFile(p)
	f.Add(v1)
	f.Add(v1[:100])
	legacy := make([]byte, 28)
	for i, v := range []int32{4, 6, 1, 2, 1, -5, 4} {
		binary.LittleEndian.PutUint32(legacy[4*i:], uint32(v))
	}
	f.Add(legacy)
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := ParseLlama2cHeader(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			return
		}
		if h.HeaderSize+h.DataSize() != int64(len(b)) {
			t.Fatalf("accepted header promising %d bytes for a %d-byte file", h.HeaderSize+h.DataSize(), len(b))
		}
		if err := h.Config.Validate(); err != nil {
			t.Fatalf("accepted invalid config: %v", err)
		}
	})
}
