package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/dpopipe/dpopipe/pipeline/arrowio"
	"github.com/dpopipe/dpopipe/stages/tokenizer"
)

func newCatCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "cat FILE.arrow",
		Short: "Print the rows of an Arrow IPC file as JSON lines",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			data, err := os.ReadFile(args[0])
			if err != nil {
				return err
			}
			w := bufio.NewWriter(os.Stdout)
			defer w.Flush()
			if err := arrowio.Cat(data, w); err != nil {
				return fmt.Errorf("%s: %w", args[0], err)
			}
			return nil
		},
	}
}

func newTokenizeCmd() *cobra.Command {
	var path string
	var noBOS bool
	cmd := &cobra.Command{
		Use:   "tokenize --tokenizer PATH [--no-bos] TEXT...",
		Short: "Show the token ids and pieces the model sees for each text",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			tok, err := tokenizer.Load(path)
			if err != nil {
				return err
			}
			enc := json.NewEncoder(os.Stdout)
			enc.SetEscapeHTML(false)
			for _, text := range args {
				ids := tok.Encode(text)
				if !noBOS && tok.AddBOS() && tok.BOS() >= 0 {
					ids = append([]int32{tok.BOS()}, ids...)
				}
				pieces := make([]string, len(ids))
				for i, id := range ids {
					pieces[i] = tok.Piece(id)
				}
				if err := enc.Encode(struct {
					IDs    []int32  `json:"ids"`
					Pieces []string `json:"pieces"`
				}{ids, pieces}); err != nil {
					return err
				}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&path, "tokenizer", "", "tokenizer: llama2.c tokenizer.bin, HF tokenizer.json or directory, or \"bytes\"")
	cmd.Flags().BoolVar(&noBOS, "no-bos", false, "do not add BOS even if the tokenizer asks for it")
	cmd.MarkFlagRequired("tokenizer")
	return cmd
}

func newReportCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "report RUN_DIR",
		Short: "Print where a run's report is and a text summary",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return printReport(args[0])
		},
	}
}
