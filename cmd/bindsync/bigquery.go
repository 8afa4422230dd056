package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"cloud.google.com/go/bigquery"
	"cloud.google.com/go/storage"
	"go.uber.org/zap"
	"google.golang.org/api/googleapi"
	"google.golang.org/api/option"

	"github.com/bindsync/bindsync/bq"
	"github.com/bindsync/bindsync/checkpoint"
	"github.com/bindsync/bindsync/config"
	"github.com/bindsync/bindsync/exporter"
	"github.com/bindsync/bindsync/staging"
	"github.com/bindsync/bindsync/staging/gcs"
	"github.com/bindsync/bindsync/worker"
)

// bigQueryCallTimeout bounds the table checks at start and the sync_runs
// append at the end: the client retries 5xx answers until its context
// ends, and an unreachable BigQuery must not hold the run forever. Load
// and copy jobs have no such bound; they end with the run's context.
const bigQueryCallTimeout = 2 * time.Minute

// setupBigQuery adds the BigQuery publisher and the sync_runs recorder to
// j. It checks the dataset and creates or updates the tables first, so
// that missing permissions or a wrong dataset stop the run before hours
// of reading Twilio; those problems exit with code 2, like other
// configuration errors.
func setupBigQuery(ctx context.Context, j *job) error {
	c := j.cfg.Warehouse.BigQuery
	client, principal, err := bq.NewClient(ctx, bq.ClientConfig{Project: c.Project, Endpoint: c.Endpoint, CredentialsFile: c.CredentialsFile})
	if err != nil {
		return usagef("warehouse.bigquery: %v", err)
	}
	// One publisher per table of the snapshot: the bindings table, then
	// the users table, one row per user of each snapshot, for the users
	// that no binding reaches, then the changes since the previous
	// snapshot (whose publisher also keeps the history view). A new table
	// of the snapshot is one more entry here. The schemas are those of the
	// privacy policy, so that the column descriptions say which columns
	// are hashed or dropped.
	policy := j.cfg.Export.Columns.Policy()
	tables := []struct {
		source, table string
		schema        bigquery.Schema
	}{
		{exporter.BindingsTable, c.Table, bq.Schema(policy.BindingSchema())},
		{exporter.UsersTable, c.Table + bq.UsersSuffix, bq.Schema(policy.UsersSchema())},
		{exporter.ChangesTable, c.Table + bq.ChangesSuffix, bq.Schema(policy.ChangesSchema())},
	}
	checkCtx, cancel := context.WithTimeout(ctx, bigQueryCallTimeout)
	defer cancel()
	var pubs []*bq.Publisher
	for _, t := range tables {
		pub, err := bq.New(client, bq.Options{
			Project:             c.Project,
			Dataset:             c.Dataset,
			Table:               t.table,
			Source:              t.source,
			Location:            c.Location,
			PartitionExpiration: time.Duration(c.PartitionExpirationDays) * 24 * time.Hour,
			Schema:              t.schema,
			Principal:           principal,
			Logger:              j.log,
		})
		if err != nil {
			client.Close()
			return usagef("warehouse.bigquery: %v", err)
		}
		if err := pub.EnsureTables(checkCtx); err != nil {
			client.Close()
			if operatorMustFix(err) {
				return usageError{err}
			}
			return err
		}
		pubs = append(pubs, pub)
		j.publishers = append(j.publishers, pub)
	}
	// sync_runs lives beside the bindings table.
	pub := pubs[0]
	j.closers = append(j.closers, client.Close)
	j.afterRun = append(j.afterRun, func(ctx context.Context, res *worker.Result, err error) {
		recordSyncRun(ctx, pub, j.log, res, err)
	})
	return nil
}

// operatorMustFix reports BigQuery errors that another run cannot get past
// without a change of configuration, permissions or tables.
func operatorMustFix(err error) bool {
	for _, kind := range []error{bq.ErrPermission, bq.ErrNotFound, bq.ErrLocation, bq.ErrSchema} {
		if errors.Is(err, kind) {
			return true
		}
	}
	return false
}

// recordSyncRun appends the row of one run to sync_runs. A run that could
// not even start (res is nil, for example because another run holds the
// snapshot) has no snapshot date or run ID and is only logged. A failure
// to append is logged too: the run's own outcome and exit code stand.
func recordSyncRun(ctx context.Context, pub *bq.Publisher, log *zap.Logger, res *worker.Result, runErr error) {
	if res == nil {
		log.Warn("run not recorded in sync_runs: it stopped before it started", zap.Error(runErr))
		return
	}
	ctx, cancel := context.WithTimeout(ctx, bigQueryCallTimeout)
	defer cancel()
	r := syncRun(res, runErr, time.Now())
	if err := pub.RecordRun(ctx, r); err != nil {
		log.Error("run not recorded in sync_runs", zap.String("run_id", r.RunID), zap.Error(err))
		return
	}
	log.Debug("run recorded in sync_runs", zap.String("run_id", r.RunID), zap.String("status", string(r.Status)))
}

// syncRun maps a run's result to its sync_runs row. A run that found its
// snapshot already published did nothing and has no run ID of its own; it
// gets one, so that scheduled runs stay visible.
func syncRun(res *worker.Result, runErr error, now time.Time) bq.Run {
	if res.AlreadyPublished {
		return bq.Run{
			RunID:        checkpoint.NewRunID(now),
			SnapshotDate: res.Date,
			Start:        now,
			End:          now,
			Status:       checkpoint.RunAlreadyPublished,
			SnapshotRows: res.Rows,
		}
	}
	s := res.Summary
	r := bq.Run{
		RunID:              res.RunID,
		SnapshotDate:       res.Date,
		Start:              s.Start,
		End:                s.End,
		Status:             s.Status,
		Error:              s.Error,
		Services:           s.Services,
		UsersTotal:         s.UsersTotal,
		UsersDone:          s.UsersDone,
		UsersGone:          s.UsersGone,
		UsersNotFound:      s.UsersNotFound,
		UsersFailed:        s.UsersFailedCount,
		Bindings:           s.Bindings,
		ContractViolations: s.ContractViolations,
		Pages:              s.Pages,
		Retries:            s.Retries,
		SnapshotRows:       res.Rows,
	}
	for _, f := range s.UsersFailed {
		r.FailedUsers = append(r.FailedUsers, bq.FailedUser{ServiceSID: f.Service, User: f.User, Reason: f.Reason})
	}
	switch {
	case r.Status == "" && runErr != nil:
		r.Status = checkpoint.RunFailed
	case r.Status == "":
		r.Status = checkpoint.RunSucceeded
	}
	if r.Error == "" && runErr != nil {
		r.Error = runErr.Error()
	}
	if r.RunID == "" {
		r.RunID = checkpoint.NewRunID(now)
	}
	if r.End.IsZero() {
		r.End = now
	}
	if r.Start.IsZero() {
		r.Start = r.End
	}
	return r
}

// openGCSStaging opens a gs://bucket/prefix staging store. The storage
// client uses warehouse.bigquery.credentials_file when it is set (one
// identity for the bucket and BigQuery), else Application Default
// Credentials; it honours STORAGE_EMULATOR_HOST, which points it at an
// emulator without credentials.
func openGCSStaging(ctx context.Context, cfg *config.Config) (staging.Store, error) {
	var opts []option.ClientOption
	if bqc := cfg.Warehouse.BigQuery; bqc != nil && bqc.CredentialsFile != "" && os.Getenv("STORAGE_EMULATOR_HOST") == "" {
		typ, err := bq.CredentialsType(bqc.CredentialsFile)
		if err != nil {
			return nil, usagef("staging: %v", err)
		}
		opts = append(opts, option.WithAuthCredentialsFile(typ, bqc.CredentialsFile))
	}
	client, err := storage.NewClient(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("staging %s: create storage client: %w", cfg.Staging, err)
	}
	store, err := gcs.New(ctx, client, cfg.Staging, gcs.Options{LockTTL: gcsLockTTL})
	if err != nil {
		client.Close()
		var gerr *googleapi.Error
		if errors.Is(err, storage.ErrBucketNotExist) || errors.As(err, &gerr) && (gerr.Code == 401 || gerr.Code == 403 || gerr.Code == 404) {
			return nil, usageError{withHint(err, "check that the bucket exists and that the credentials in use hold roles/storage.objectAdmin on it")}
		}
		return nil, err
	}
	return gcsStaging{store, client}, nil
}

// gcsLockTTL is the lease of a snapshot's lock on GCS: a run that dies
// holds its snapshot this long at most; a live run renews it every third.
const gcsLockTTL = 2 * time.Minute

// gcsStaging is the GCS store together with the client it owns.
type gcsStaging struct {
	*gcs.Store
	client *storage.Client
}

func (s gcsStaging) Close() error { return s.client.Close() }
