package main

import (
	"github.com/spf13/cobra"
)

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:           "dpopipe",
		Short:         "Preference tuning (DPO) as declarative, cached pipelines of plugin stages",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(
		newRunCmd(), newValidateCmd(), newGraphCmd(), newStagesCmd(), newExplainCmd(),
		newCacheCmd(), newCatCmd(), newTokenizeCmd(), newReportCmd(), newVersionCmd(), newPluginCmd(),
	)
	return root
}
