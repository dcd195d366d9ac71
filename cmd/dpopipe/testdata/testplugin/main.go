// Command testplugin is a stage plugin that misbehaves on purpose, for the
// engine's tests. Its behaviour comes from its file name, so that one build
// copied under several names gives several plugins:
//
//	dpopipe-stage-passthrough  copies its input to its output (sleep_ms per batch)
//	dpopipe-stage-crash        writes one batch, then exits with status 3
//	dpopipe-stage-hang         never finishes
//	dpopipe-stage-garbage      writes garbage to stdout instead of the handshake
//	dpopipe-stage-protocol2    speaks stage protocol version 2
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"github.com/dpopipe/dpopipe/plugins/protocol"
	"github.com/dpopipe/dpopipe/plugins/sdk"
)

type stage struct{ typ string }

func (s *stage) Spec() sdk.Spec {
	return sdk.Spec{
		Type: s.typ, Version: "0.0.1", Description: "test plugin",
		Config: []sdk.Attr{
			{Name: "sleep_ms", Type: "number", Default: sdk.Def(0)},
			{Name: "label", Type: "string", Default: sdk.Def("")},
		},
		Input: []sdk.Column{{Name: "row", Type: "int64"}},
	}
}

func (s *stage) Run(ctx context.Context, run *sdk.Run) error {
	var cfg struct {
		SleepMS int `json:"sleep_ms"`
	}
	if err := run.Config.Decode(&cfg); err != nil {
		return err
	}
	n := 0
	for run.Input.Next() {
		rec := run.Input.RecordBatch()
		n++
		run.Progress(int64(n), 0, "batches")
		if err := run.Write(rec); err != nil {
			return err
		}
		switch s.typ {
		case "crash":
			os.Exit(3)
		case "hang":
			<-ctx.Done()
			time.Sleep(time.Hour)
		}
		select {
		case <-time.After(time.Duration(cfg.SleepMS) * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return run.Input.Err()
}

func main() {
	typ := strings.TrimPrefix(filepath.Base(os.Args[0]), "dpopipe-stage-")
	switch typ {
	case "garbage":
		fmt.Println("hello from a plugin that prints to stdout")
		time.Sleep(time.Second)
		os.Exit(0)
	case "protocol2":
		hs := protocol.Handshake
		hs.ProtocolVersion = 2
		plugin.Serve(&plugin.ServeConfig{
			HandshakeConfig:  hs,
			VersionedPlugins: map[int]plugin.PluginSet{2: {protocol.PluginName: &v2Plugin{}}},
			GRPCServer:       plugin.DefaultGRPCServer,
		})
		return
	}
	sdk.Serve(&stage{typ: typ})
}

// v2Plugin stands for a plugin built against a future protocol.
type v2Plugin struct{ plugin.NetRPCUnsupportedPlugin }

func (v2Plugin) GRPCServer(*plugin.GRPCBroker, *grpc.Server) error { return nil }
func (v2Plugin) GRPCClient(context.Context, *plugin.GRPCBroker, *grpc.ClientConn) (any, error) {
	return nil, errors.New("unused")
}
