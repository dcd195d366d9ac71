package sdk

import "github.com/apache/arrow-go/v18/arrow/memory"

func memoryBytes(b []byte) *memory.Buffer { return memory.NewBufferBytes(b) }
