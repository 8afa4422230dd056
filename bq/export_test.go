package bq

import "cloud.google.com/go/bigquery"

// RunsSchemaForTest exposes the sync_runs schema to the external tests,
// which build a table as an older bindsync made it.
func RunsSchemaForTest() bigquery.Schema { return runsSchema() }
