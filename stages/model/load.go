package model

import (
	"os"
)

// Load reads a model from a llama2.c checkpoint file (legacy or version-1
// header) or from a Hugging Face directory (config.json with
// model.safetensors or a sharded model.safetensors.index.json).
func Load(path string) (*Model, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if st.IsDir() {
		return loadHF(path)
	}
	m, err := loadLlama2c(path)
	if err != nil {
		return nil, err
	}
	return m, nil
}
