package main

import (
	"context"

	"github.com/bindsync/bindsync/config"
	"github.com/bindsync/bindsync/staging"
)

// setupBigQuery adds the BigQuery publisher and the sync_runs recorder to j.
func setupBigQuery(ctx context.Context, j *job) error {
	return usagef("warehouse.bigquery: publishing to BigQuery is not available in this build; use warehouse.local")
}

func openGCSStaging(ctx context.Context, cfg *config.Config) (staging.Store, error) {
	return nil, usagef("staging: gs:// staging is not available in this build; use a local directory")
}
