package model

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
)

// hfEntry is one tensor under its Hugging Face name: shape and offset in
// the flat layout.
type hfEntry struct {
	name  string
	shape []int
	off   int
}

func (e hfEntry) size() int {
	n := 1
	for _, s := range e.shape {
		n *= s
	}
	return n
}

// hfEntries lists the model's tensors under their Hugging Face names, in
// our layout order.
func hfEntries(c Config) []hfEntry {
	l := newLayout(c)
	d, kvd, f, v := l.d, l.kvd, l.f, l.v
	var es []hfEntry
	add := func(name string, off int, shape ...int) { es = append(es, hfEntry{name, shape, off}) }
	add("model.embed_tokens.weight", l.tokEmb, v, d)
	for i := 0; i < c.NLayers; i++ {
		p := fmt.Sprintf("model.layers.%d.", i)
		add(p+"input_layernorm.weight", l.rmsAtt+i*d, d)
		add(p+"self_attn.q_proj.weight", l.wq+i*l.sizeWq, d, d)
		add(p+"self_attn.k_proj.weight", l.wk+i*l.sizeWkv, kvd, d)
		add(p+"self_attn.v_proj.weight", l.wv+i*l.sizeWkv, kvd, d)
		if c.QKVBias {
			add(p+"self_attn.q_proj.bias", l.bq+i*d, d)
			add(p+"self_attn.k_proj.bias", l.bk+i*kvd, kvd)
			add(p+"self_attn.v_proj.bias", l.bv+i*kvd, kvd)
		}
		add(p+"self_attn.o_proj.weight", l.wo+i*l.sizeWq, d, d)
		add(p+"post_attention_layernorm.weight", l.rmsFFN+i*d, d)
		add(p+"mlp.gate_proj.weight", l.w1+i*l.sizeW1, f, d)
		add(p+"mlp.up_proj.weight", l.w3+i*l.sizeW1, f, d)
		add(p+"mlp.down_proj.weight", l.w2+i*l.sizeW1, d, f)
	}
	add("model.norm.weight", l.rmsFinal, d)
	if !c.TiedEmbeddings {
		add("lm_head.weight", l.wcls, v, d)
	}
	return es
}

// hfTensors lists the model's tensors as views of buf.
func (m *Model) hfTensors(buf []float32) []namedTensor {
	es := hfEntries(m.Config)
	ts := make([]namedTensor, len(es))
	for i, e := range es {
		ts[i] = namedTensor{e.name, e.shape, buf[e.off : e.off+e.size()]}
	}
	return ts
}

// hfConfig is the subset of a transformers config.json we read and write.
type hfConfig struct {
	Architectures         []string        `json:"architectures"`
	ModelType             string          `json:"model_type"`
	HiddenSize            int             `json:"hidden_size"`
	IntermediateSize      int             `json:"intermediate_size"`
	NumHiddenLayers       int             `json:"num_hidden_layers"`
	NumAttentionHeads     int             `json:"num_attention_heads"`
	NumKeyValueHeads      int             `json:"num_key_value_heads,omitempty"`
	HeadDim               int             `json:"head_dim,omitempty"`
	VocabSize             int             `json:"vocab_size"`
	MaxPositionEmbeddings int             `json:"max_position_embeddings"`
	RMSNormEps            float64         `json:"rms_norm_eps"`
	RopeTheta             float64         `json:"rope_theta,omitempty"`
	RopeScaling           json.RawMessage `json:"rope_scaling,omitempty"`
	TieWordEmbeddings     *bool           `json:"tie_word_embeddings,omitempty"`
	HiddenAct             string          `json:"hidden_act,omitempty"`
	AttentionBias         bool            `json:"attention_bias"`
	MLPBias               bool            `json:"mlp_bias"`
	BOSTokenID            json.RawMessage `json:"bos_token_id,omitempty"`
	EOSTokenID            json.RawMessage `json:"eos_token_id,omitempty"`
	TorchDType            string          `json:"torch_dtype,omitempty"`
	// RopeStyle is our own key: "adjacent" marks a model exported from a
	// llama2.c checkpoint without permuting q/k (transformers ignores it and
	// would apply rotate-half). Absent means the Hugging Face convention.
	RopeStyle string `json:"dpopipe_rope_style,omitempty"`
}

// SaveHF writes config.json and model.safetensors (F32) into dir, each
// atomically. Models with q/k/v biases are written as Qwen2ForCausalLM,
// others as LlamaForCausalLM. Weights are written as they are: a model with
// adjacent-pair RoPE (from llama2.c) records "dpopipe_rope_style": "adjacent"
// in config.json, which Load honours; transformers would apply rotate-half
// to such a model.
func (m *Model) SaveHF(dir string) error {
	c := m.Config
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	tied := c.TiedEmbeddings
	hc := hfConfig{
		Architectures: []string{"LlamaForCausalLM"}, ModelType: "llama",
		HiddenSize: c.Dim, IntermediateSize: c.HiddenDim, NumHiddenLayers: c.NLayers,
		NumAttentionHeads: c.NHeads, NumKeyValueHeads: c.NKVHeads, VocabSize: c.VocabSize,
		MaxPositionEmbeddings: c.SeqLen, RMSNormEps: float64(c.NormEps), RopeTheta: float64(c.RopeTheta),
		TieWordEmbeddings: &tied, HiddenAct: "silu", TorchDType: "float32",
	}
	if c.QKVBias {
		hc.Architectures, hc.ModelType = []string{"Qwen2ForCausalLM"}, "qwen2"
	}
	if c.Rope == RopeAdjacent {
		hc.RopeStyle = "adjacent"
	}
	tok := func(id int32) json.RawMessage {
		if id < 0 {
			return json.RawMessage("null")
		}
		return json.RawMessage(fmt.Sprint(id))
	}
	hc.BOSTokenID, hc.EOSTokenID = tok(c.BOS), tok(c.EOS)
	cj, err := json.MarshalIndent(hc, "", "  ")
	if err != nil {
		return err
	}
	ts := m.hfTensors(m.Params)
	if err := atomicWrite(filepath.Join(dir, "model.safetensors"), func(w io.Writer) error {
		return writeSafetensors(w, map[string]string{"format": "pt"}, ts)
	}); err != nil {
		return err
	}
	return atomicWrite(filepath.Join(dir, "config.json"), func(w io.Writer) error {
		_, err := w.Write(append(cj, '\n'))
		return err
	})
}

func parseTokenID(raw json.RawMessage) int32 {
	if len(raw) == 0 {
		return -1
	}
	var v int64
	if json.Unmarshal(raw, &v) == nil && v >= 0 && v < 1<<31 {
		return int32(v)
	}
	var vs []int64
	if json.Unmarshal(raw, &vs) == nil && len(vs) > 0 && vs[0] >= 0 && vs[0] < 1<<31 {
		return int32(vs[0])
	}
	return -1
}

func hfModelConfig(dir string) (Config, error) {
	path := filepath.Join(dir, "config.json")
	b, err := os.ReadFile(path)
	if err != nil {
		return Config{}, err
	}
	var hc hfConfig
	if err := json.Unmarshal(b, &hc); err != nil {
		return Config{}, fmt.Errorf("%s: %w", path, err)
	}
	qwen := false
	if len(hc.Architectures) > 0 {
		switch hc.Architectures[0] {
		case "LlamaForCausalLM":
		case "Qwen2ForCausalLM":
			qwen = true
		default:
			return Config{}, fmt.Errorf("%s: unsupported architecture %q (want LlamaForCausalLM or Qwen2ForCausalLM)", path, hc.Architectures[0])
		}
	} else if hc.ModelType == "qwen2" {
		qwen = true
	} else if hc.ModelType != "llama" {
		return Config{}, fmt.Errorf("%s: unsupported model_type %q", path, hc.ModelType)
	}
	if hc.HiddenAct != "" && hc.HiddenAct != "silu" {
		return Config{}, fmt.Errorf("%s: unsupported hidden_act %q", path, hc.HiddenAct)
	}
	if len(hc.RopeScaling) > 0 && string(hc.RopeScaling) != "null" {
		return Config{}, fmt.Errorf("%s: rope_scaling is not supported", path)
	}
	if !qwen && (hc.AttentionBias || hc.MLPBias) {
		return Config{}, fmt.Errorf("%s: Llama attention_bias/mlp_bias are not supported", path)
	}
	c := Config{
		Dim: hc.HiddenSize, HiddenDim: hc.IntermediateSize, NLayers: hc.NumHiddenLayers, NHeads: hc.NumAttentionHeads,
		NKVHeads: hc.NumKeyValueHeads, VocabSize: hc.VocabSize, SeqLen: hc.MaxPositionEmbeddings,
		NormEps: float32(hc.RMSNormEps), RopeTheta: float32(hc.RopeTheta), Rope: RopeHalf, QKVBias: qwen,
		BOS: parseTokenID(hc.BOSTokenID), EOS: parseTokenID(hc.EOSTokenID),
	}
	if c.NKVHeads == 0 {
		c.NKVHeads = c.NHeads
	}
	if c.SeqLen == 0 {
		c.SeqLen = 2048
	}
	if c.NormEps == 0 {
		c.NormEps = 1e-6
	}
	if c.RopeTheta == 0 {
		c.RopeTheta = 10000
	}
	if hc.TieWordEmbeddings != nil {
		c.TiedEmbeddings = *hc.TieWordEmbeddings
	}
	switch hc.RopeStyle {
	case "", "half":
	case "adjacent":
		c.Rope = RopeAdjacent
	default:
		return Config{}, fmt.Errorf("%s: unknown dpopipe_rope_style %q", path, hc.RopeStyle)
	}
	if hc.NumAttentionHeads > 0 && hc.HeadDim != 0 && hc.HeadDim*hc.NumAttentionHeads != hc.HiddenSize {
		return Config{}, fmt.Errorf("%s: head_dim %d × heads %d != hidden_size %d is not supported", path, hc.HeadDim, hc.NumAttentionHeads, hc.HiddenSize)
	}
	if c.BOS >= int32(c.VocabSize) {
		c.BOS = -1
	}
	if c.EOS >= int32(c.VocabSize) {
		c.EOS = -1
	}
	if err := c.Validate(); err != nil {
		return Config{}, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

type stFile struct {
	path string
	f    *os.File
	h    *SafetensorsHeader
}

func openSafetensors(path string) (*stFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	h, err := ParseSafetensorsHeader(f, st.Size())
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &stFile{path, f, h}, nil
}

func loadHF(dir string) (*Model, error) {
	cfg, err := hfModelConfig(dir)
	if err != nil {
		return nil, err
	}
	var files []*stFile
	defer func() {
		for _, f := range files {
			f.f.Close()
		}
	}()
	where := map[string]*stFile{}
	single := filepath.Join(dir, "model.safetensors")
	index := filepath.Join(dir, "model.safetensors.index.json")
	if _, err := os.Stat(single); err == nil {
		sf, err := openSafetensors(single)
		if err != nil {
			return nil, err
		}
		files = append(files, sf)
		for name := range sf.h.Tensors {
			where[name] = sf
		}
	} else if b, err := os.ReadFile(index); err == nil {
		var idx struct {
			WeightMap map[string]string `json:"weight_map"`
		}
		if err := json.Unmarshal(b, &idx); err != nil {
			return nil, fmt.Errorf("%s: %w", index, err)
		}
		byFile := map[string]*stFile{}
		names := make([]string, 0, len(idx.WeightMap))
		for name := range idx.WeightMap {
			names = append(names, name)
		}
		sort.Strings(names)
		for _, name := range names {
			fn := idx.WeightMap[name]
			if fn != filepath.Base(fn) {
				return nil, fmt.Errorf("%s: shard name %q must be a plain file name", index, fn)
			}
			sf := byFile[fn]
			if sf == nil {
				sf, err = openSafetensors(filepath.Join(dir, fn))
				if err != nil {
					return nil, err
				}
				byFile[fn] = sf
				files = append(files, sf)
			}
			if _, ok := sf.h.Tensors[name]; !ok {
				return nil, fmt.Errorf("%s: index maps %q to %s, which does not contain it", index, name, fn)
			}
			where[name] = sf
		}
	} else {
		return nil, fmt.Errorf("%s: neither model.safetensors nor model.safetensors.index.json found", dir)
	}
	if _, ok := where["lm_head.weight"]; !ok && !cfg.TiedEmbeddings {
		// Some exports omit lm_head and rely on tying.
		cfg.TiedEmbeddings = true
	}
	return loadHFTensors(cfg, where)
}

func loadHFTensors(cfg Config, where map[string]*stFile) (*Model, error) {
	// Check every tensor's presence and shape before allocating anything
	// sized by the config: the shapes were checked against the file sizes.
	entries := hfEntries(cfg)
	for _, e := range entries {
		sf, ok := where[e.name]
		if !ok {
			return nil, fmt.Errorf("tensor %s missing from the checkpoint", e.name)
		}
		t := sf.h.Tensors[e.name]
		if !equalShape(t.Shape, e.shape) {
			return nil, fmt.Errorf("%s: tensor %s has shape %v, config implies %v", sf.path, e.name, t.Shape, e.shape)
		}
	}
	m, err := newModel(cfg)
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		sf := where[e.name]
		if err := readTensorF32(sf.f, sf.h.Tensors[e.name], m.Params[e.off:e.off+e.size()]); err != nil {
			return nil, fmt.Errorf("%s: %w", sf.path, err)
		}
	}
	return m, nil
}

func equalShape(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
