// Package protocol fixes the wire contract between the dpopipe host and a
// stage plugin: the go-plugin handshake, the Arrow Flight actions and the
// messages carried in a stage run's DoExchange stream.
//
// A stage plugin serves Arrow Flight over go-plugin's gRPC connection:
//
//   - DoAction "describe" returns the stage's sdk.Spec as JSON.
//   - DoAction "configure" takes the evaluated config as JSON and returns a
//     ConfigureResult listing attribute errors.
//   - DoExchange runs the stage. The host's first message carries no data and
//     a FlightDescriptor whose Cmd is a RunRequest in JSON. If the stage has
//     an input, the host then streams it as Arrow IPC messages. The plugin
//     streams its output table the same way, interleaved with
//     metadata-only messages whose AppMetadata is an Event in JSON. The last
//     event is of kind "done". A failed run ends the stream with a gRPC error.
package protocol

import (
	"encoding/json"

	"github.com/hashicorp/go-plugin"
)

// Version is the stage protocol version. It equals sdk.ProtocolVersion.
const Version = 1

// PluginName is the name under which a stage is dispensed.
const PluginName = "stage"

// Handshake is shared by the host and every plugin. The cookie only guards
// against running a plugin binary by hand; it is not a security measure.
var Handshake = plugin.HandshakeConfig{
	ProtocolVersion:  Version,
	MagicCookieKey:   "DPOPIPE_STAGE_PLUGIN",
	MagicCookieValue: "7d3c6f0e2b1a4e59a8c4d1f0b6e2a9c3",
}

// Flight action names.
const (
	ActionDescribe  = "describe"
	ActionConfigure = "configure"
)

// MaxMessageBytes is the gRPC message size limit both sides allow. Batches
// are split well below it (see MaxBatchBytes).
const MaxMessageBytes = 256 << 20

// MaxBatchBytes bounds the Arrow buffers carried by one streamed batch.
const MaxBatchBytes = 8 << 20

// RunRequest starts a stage run.
type RunRequest struct {
	Stage    string          `json:"stage"` // "TYPE.NAME", for messages
	Config   json.RawMessage `json:"config"`
	Dir      string          `json:"dir"`       // where the stage writes its artifact files
	RunDir   string          `json:"run_dir"`   // the stage's directory in the run directory (logs)
	CacheDir string          `json:"cache_dir"` // the cache root, for row-level reuse
	HasInput bool            `json:"has_input"`
	// NoCache asks stages with their own row-level reuse not to read it.
	NoCache bool `json:"no_cache,omitempty"`
	// Resume asks stages that checkpoint (training) to continue from the
	// last checkpoint in RunDir.
	Resume bool `json:"resume,omitempty"`
}

// Event kinds.
const (
	EventProgress = "progress"
	EventStat     = "stat"
	EventPrint    = "print"
	EventDone     = "done"
	// EventMeta carries a string annotation for the cache entry (Name,
	// Message), such as the model digest shown by dpopipe cache ls.
	EventMeta = "meta"
)

// Event is a message from a running stage to the host.
type Event struct {
	Kind    string            `json:"kind"`
	Done    int64             `json:"done,omitempty"`
	Total   int64             `json:"total,omitempty"`
	Unit    string            `json:"unit,omitempty"`
	Name    string            `json:"name,omitempty"`
	Value   int64             `json:"value,omitempty"`
	Message string            `json:"message,omitempty"`
	Stats   map[string]int64  `json:"stats,omitempty"`
	Meta    map[string]string `json:"meta,omitempty"`
}

// AttrError is a configuration error tied to one attribute.
type AttrError struct {
	Attr    string `json:"attr,omitempty"`
	Summary string `json:"summary"`
	Detail  string `json:"detail,omitempty"`
}

// ConfigureResult answers the configure action.
type ConfigureResult struct {
	Errors []AttrError `json:"errors,omitempty"`
}
