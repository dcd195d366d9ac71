package train

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/dpopipe/dpopipe/stages/model"
)

// A checkpoint is a directory RunDir/checkpoints/step-N/ holding:
//
//	params.bin     the parameters, raw float32 little-endian
//	optimizer.bin  the AdamW state (model.AdamW.MarshalBinary)
//	rng.bin        the shuffling PCG's state
//	perm.bin       the current epoch's permutation, int32 little-endian
//	metrics.jsonl  the metrics lines written so far
//	state.json     step, data position, the open logging window, the
//	               configuration fingerprint, the input digest and the
//	               sha256 of every other file
//
// It is written into a temporary directory beside it, every file and the
// directory fsynced, then renamed into place, so step-N exists only when
// complete. Loading verifies every file's digest.

const ckptVersion = 1

type ckptState struct {
	Version     int               `json:"version"`
	Kind        string            `json:"kind"`
	Step        int               `json:"step"`
	Epoch       int               `json:"epoch"`
	Pos         int               `json:"pos"`
	MicroDone   int               `json:"micro_done"`
	PermEpoch   int               `json:"perm_epoch"`
	Tokens      int64             `json:"tokens"`
	LossTotal   float64           `json:"loss_total"`
	GradNorm    float64           `json:"grad_norm"`
	Window      window            `json:"window"`
	TotalSteps  int               `json:"total_steps"`
	Config      string            `json:"config"`
	DataDigest  string            `json:"data_digest"`
	StartDigest string            `json:"start_digest"`
	ModelConfig model.Config      `json:"model_config"`
	Files       map[string]string `json:"files"`
}

type checkpoint struct {
	state   ckptState
	params  []float32
	opt     *model.AdamW
	rng     []byte
	perm    []int32
	metrics []byte
	dir     string
}

func f32Bytes(v []float32) []byte {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return b
}

func bytesF32(b []byte) ([]float32, error) {
	if len(b)%4 != 0 {
		return nil, errors.New("length is not a multiple of 4")
	}
	v := make([]float32, len(b)/4)
	for i := range v {
		v[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return v, nil
}

func i32Bytes(v []int32) []byte {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], uint32(x))
	}
	return b
}

func digest(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func writeSynced(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func stepDirName(step int) string { return fmt.Sprintf("step-%d", step) }

// saveCheckpoint writes ck into root/step-N atomically and prunes old
// checkpoints beyond keep (0 keeps all).
func saveCheckpoint(root string, ck *checkpoint, keep int) (string, error) {
	if err := os.MkdirAll(root, 0o755); err != nil {
		return "", err
	}
	tmp, err := os.MkdirTemp(root, ".tmp-"+stepDirName(ck.state.Step)+"-")
	if err != nil {
		return "", err
	}
	ok := false
	defer func() {
		if !ok {
			os.RemoveAll(tmp)
		}
	}()
	optB, err := ck.opt.MarshalBinary()
	if err != nil {
		return "", err
	}
	files := map[string][]byte{
		"params.bin":    f32Bytes(ck.params),
		"optimizer.bin": optB,
		"rng.bin":       ck.rng,
		"perm.bin":      i32Bytes(ck.perm),
		"metrics.jsonl": ck.metrics,
	}
	ck.state.Version = ckptVersion
	ck.state.Files = map[string]string{}
	for name, b := range files {
		ck.state.Files[name] = digest(b)
		if err := writeSynced(filepath.Join(tmp, name), b); err != nil {
			return "", err
		}
	}
	sb, err := json.MarshalIndent(&ck.state, "", " ")
	if err != nil {
		return "", err
	}
	if err := writeSynced(filepath.Join(tmp, "state.json"), append(sb, '\n')); err != nil {
		return "", err
	}
	if err := syncDir(tmp); err != nil {
		return "", err
	}
	final := filepath.Join(root, stepDirName(ck.state.Step))
	if _, err := os.Stat(final); err == nil {
		// A checkpoint of the same step from an earlier attempt (one that
		// failed verification): move it aside, then replace it.
		old := final + ".old"
		os.RemoveAll(old)
		if err := os.Rename(final, old); err != nil {
			return "", err
		}
		defer os.RemoveAll(old)
	}
	if err := os.Rename(tmp, final); err != nil {
		return "", err
	}
	ok = true
	if err := syncDir(root); err != nil {
		return "", err
	}
	if keep > 0 {
		steps, _ := listCheckpoints(root)
		for _, s := range steps[min(keep, len(steps)):] {
			os.RemoveAll(filepath.Join(root, stepDirName(s)))
		}
	}
	return final, nil
}

// listCheckpoints returns the steps of the complete checkpoints in root,
// newest first.
func listCheckpoints(root string) ([]int, error) {
	ents, err := os.ReadDir(root)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, err
	}
	var steps []int
	for _, e := range ents {
		name := e.Name()
		if !e.IsDir() || !strings.HasPrefix(name, "step-") {
			continue
		}
		n, err := strconv.Atoi(strings.TrimPrefix(name, "step-"))
		if err != nil || n < 0 || stepDirName(n) != name {
			continue
		}
		steps = append(steps, n)
	}
	sort.Sort(sort.Reverse(sort.IntSlice(steps)))
	return steps, nil
}

// clearCheckpoints removes every checkpoint and leftover temporary
// directory in root (a fresh run in a directory used before).
func clearCheckpoints(root string) error {
	ents, err := os.ReadDir(root)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return err
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "step-") || strings.HasPrefix(e.Name(), ".tmp-step-") {
			if err := os.RemoveAll(filepath.Join(root, e.Name())); err != nil {
				return err
			}
		}
	}
	return nil
}

// loadCheckpoint reads and verifies root/step-N.
func loadCheckpoint(dir string) (*checkpoint, error) {
	sb, err := os.ReadFile(filepath.Join(dir, "state.json"))
	if err != nil {
		return nil, err
	}
	ck := &checkpoint{dir: dir}
	dec := json.NewDecoder(bytes.NewReader(sb))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&ck.state); err != nil {
		return nil, fmt.Errorf("state.json: %w", err)
	}
	if ck.state.Version != ckptVersion {
		return nil, fmt.Errorf("checkpoint format version %d, want %d", ck.state.Version, ckptVersion)
	}
	read := func(name string) ([]byte, error) {
		want, ok := ck.state.Files[name]
		if !ok {
			return nil, fmt.Errorf("state.json lists no digest for %s", name)
		}
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return nil, err
		}
		if got := digest(b); got != want {
			return nil, fmt.Errorf("%s is corrupt: sha256 %s, state.json says %s", name, got, want)
		}
		return b, nil
	}
	b, err := read("params.bin")
	if err != nil {
		return nil, err
	}
	if ck.params, err = bytesF32(b); err != nil {
		return nil, fmt.Errorf("params.bin: %w", err)
	}
	if b, err = read("optimizer.bin"); err != nil {
		return nil, err
	}
	ck.opt = &model.AdamW{}
	if err := ck.opt.UnmarshalBinary(b); err != nil {
		return nil, err
	}
	if ck.rng, err = read("rng.bin"); err != nil {
		return nil, err
	}
	if b, err = read("perm.bin"); err != nil {
		return nil, err
	}
	if len(b)%4 != 0 {
		return nil, errors.New("perm.bin: length is not a multiple of 4")
	}
	ck.perm = make([]int32, len(b)/4)
	for i := range ck.perm {
		ck.perm[i] = int32(binary.LittleEndian.Uint32(b[4*i:]))
	}
	if ck.metrics, err = read("metrics.jsonl"); err != nil {
		return nil, err
	}
	return ck, nil
}
