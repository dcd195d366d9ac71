package model

func loadHF(dir string) (*Model, error) { return nil, nil }
