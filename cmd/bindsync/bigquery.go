package main

import (
	"context"

	"go.uber.org/zap"

	"github.com/bindsync/bindsync/config"
	"github.com/bindsync/bindsync/exporter"
	"github.com/bindsync/bindsync/staging"
)

func newBigQueryPublisher(ctx context.Context, cfg *config.Config, log *zap.Logger) (exporter.Publisher, error) {
	return nil, usagef("warehouse.bigquery: publishing to BigQuery is not available in this build; use warehouse.local")
}

func openGCSStaging(ctx context.Context, cfg *config.Config) (staging.Store, error) {
	return nil, usagef("staging: gs:// staging is not available in this build; use a local directory")
}
