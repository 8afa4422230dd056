package bq

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strconv"

	"cloud.google.com/go/bigquery"
	"go.uber.org/zap"
	"google.golang.org/api/googleapi"

	"github.com/bindsync/bindsync/exporter"
	"github.com/bindsync/bindsync/staging"
)

// parquetSource sets what every load of a part needs: Parquet, and list
// inference so that message_types loads as a REPEATED STRING column.
func parquetSource(fc *bigquery.FileConfig) {
	fc.SourceFormat = bigquery.Parquet
	fc.ParquetOptions = &bigquery.ParquetOptions{EnableListInference: true}
}

// sortedParts returns the parts in name order, the order of the steps.
func (pub *publish) sortedParts() ([]exporter.PartInfo, error) {
	parts := append([]exporter.PartInfo(nil), pub.parts...)
	sort.Slice(parts, func(i, j int) bool { return parts[i].Name < parts[j].Name })
	for i := 1; i < len(parts); i++ {
		if parts[i].Name == parts[i-1].Name {
			return nil, fmt.Errorf("bigquery: part %q is listed twice", parts[i].Name)
		}
	}
	return parts, nil
}

func (pub *publish) partition() string {
	return pub.p.opts.Table + "$" + partitionID(pub.s.Date)
}

// fromGCS loads every part, where the staging store keeps it in the
// bucket, with one load job that replaces the snapshot's partition: the
// job is atomic, so the partition changes all at once.
func (pub *publish) fromGCS(ctx context.Context) error {
	parts, err := pub.sortedParts()
	if err != nil {
		return err
	}
	store := pub.s.Store.(staging.InPlace)
	uris := make([]string, len(parts))
	for i, part := range parts {
		uris[i], _ = store.GCSURI(part.Name)
	}
	dst := pub.partition()
	return pub.run(ctx, step{
		name:   "load",
		what:   fmt.Sprintf("load %d Parquet parts from the staging bucket into %s", len(parts), dst),
		target: dst,
		submit: func(ctx context.Context, id string) (*bigquery.Job, error) {
			src := bigquery.NewGCSReference(uris...)
			parquetSource(&src.FileConfig)
			l := pub.p.dataset().Table(dst).LoaderFrom(src)
			l.JobIDConfig = bigquery.JobIDConfig{JobID: id, Location: pub.p.opts.Location}
			l.CreateDisposition = bigquery.CreateNever
			l.WriteDisposition = bigquery.WriteTruncate
			return l.Run(ctx)
		},
	})
}

// fromUploads publishes parts that BigQuery cannot read where they are:
// each is uploaded by a load job into a staging table, which one copy job
// then moves into the snapshot's partition, atomically; the staging table
// is dropped at the end.
//
// The staging table is per snapshot and carries a generation number in the
// journal. Load steps are named after the generation, so they count only
// while the staging table of that generation exists: when it is missing
// (never made, expired, dropped), a new generation starts from an empty
// table and reloads every part. Either way each part is in it exactly once.
func (pub *publish) fromUploads(ctx context.Context) error {
	parts, err := pub.sortedParts()
	if err != nil {
		return err
	}
	stage := pub.p.opts.Table + "__staging_" + partitionID(pub.s.Date)
	genKey := pub.prefix + "staging.generation"
	gen, _ := strconv.Atoi(pub.journal.Get(genKey))
	copyStep := func(gen int) string { return "g" + strconv.Itoa(gen) + "_copy" }

	if gen == 0 || !pub.done(copyStep(gen)) {
		exists := false
		if gen > 0 {
			if exists, err = pub.p.tableExists(ctx, stage); err != nil {
				return err
			}
		}
		if !exists {
			if gen > 0 {
				// A job of the lost generation may still be running; let it
				// end before a new table of the same name exists.
				if err := pub.settle(ctx, gen, len(parts), copyStep(gen)); err != nil {
					return err
				}
			}
			gen++
			if err := pub.journal.Set(ctx, map[string]string{genKey: strconv.Itoa(gen)}); err != nil {
				return fmt.Errorf("bigquery: save publishing state: %w", err)
			}
			if err := pub.p.createStagingTable(ctx, stage); err != nil {
				return err
			}
			pub.log.Info("created staging table", zap.String("staging_table", stage), zap.Int("generation", gen))
		}
		for i, part := range parts {
			if err := pub.run(ctx, pub.uploadStep(stage, gen, i, part)); err != nil {
				return err
			}
		}
		dst := pub.partition()
		err := pub.run(ctx, step{
			name:   copyStep(gen),
			what:   fmt.Sprintf("copy staging table %s into %s", stage, dst),
			target: dst,
			submit: func(ctx context.Context, id string) (*bigquery.Job, error) {
				c := pub.p.dataset().Table(dst).CopierFrom(pub.p.dataset().Table(stage))
				c.JobIDConfig = bigquery.JobIDConfig{JobID: id, Location: pub.p.opts.Location}
				c.CreateDisposition = bigquery.CreateNever
				c.WriteDisposition = bigquery.WriteTruncate
				return c.Run(ctx)
			},
		})
		if err != nil {
			return err
		}
	}
	if err := pub.p.dataset().Table(stage).Delete(ctx); err != nil && !isNotFound(err) {
		// The snapshot is published; the table expires by itself.
		pub.log.Warn("drop staging table", zap.String("staging_table", stage), zap.Error(err))
	}
	return nil
}

// uploadStep loads part i into the staging table. The first part of a
// generation truncates the table's data (keeping its schema), the others
// append.
func (pub *publish) uploadStep(stage string, gen, i int, part exporter.PartInfo) step {
	write := bigquery.WriteAppend
	if i == 0 {
		write = bigquery.WriteTruncateData
	}
	return step{
		name:   fmt.Sprintf("g%d_load_p%04d", gen, i),
		what:   fmt.Sprintf("load part %s into staging table %s", part.Name, stage),
		target: stage,
		submit: func(ctx context.Context, id string) (*bigquery.Job, error) {
			obj, err := pub.s.Store.Open(ctx, part.Name)
			if err != nil {
				return nil, fmt.Errorf("open part %s: %w", part.Name, err)
			}
			defer obj.Close()
			if part.Bytes != 0 && obj.Size() != part.Bytes {
				return nil, fmt.Errorf("part %s has %d bytes, the snapshot says %d", part.Name, obj.Size(), part.Bytes)
			}
			src := bigquery.NewReaderSource(io.NewSectionReader(obj, 0, obj.Size()))
			parquetSource(&src.FileConfig)
			l := pub.p.dataset().Table(stage).LoaderFrom(src)
			l.MediaOptions = uploadOptions(obj.Size())
			l.JobIDConfig = bigquery.JobIDConfig{JobID: id, Location: pub.p.opts.Location}
			l.CreateDisposition = bigquery.CreateNever
			l.WriteDisposition = write
			return l.Run(ctx)
		},
	}
}

// settle waits for the jobs of generation gen that were submitted but
// not seen to end.
func (pub *publish) settle(ctx context.Context, gen, parts int, copyStep string) error {
	steps := []string{copyStep}
	for i := range parts {
		steps = append(steps, fmt.Sprintf("g%d_load_p%04d", gen, i))
	}
	for _, name := range steps {
		id := pub.journal.Get(pub.key(name, "job"))
		if id == "" || pub.done(name) {
			continue
		}
		job, err := pub.p.client.JobFromIDLocation(ctx, id, pub.p.opts.Location)
		if isNotFound(err) {
			continue
		}
		if err == nil {
			_, err = pub.p.wait(ctx, job)
		}
		if err != nil {
			return pub.p.scope(pub.p.opts.Table).explain("wait for job "+id, err)
		}
	}
	return nil
}

// tableExists reports whether the table exists.
func (p *Publisher) tableExists(ctx context.Context, name string) (bool, error) {
	_, err := p.dataset().Table(name).Metadata(ctx)
	switch {
	case err == nil:
		return true, nil
	case isNotFound(err):
		return false, nil
	}
	return false, p.scope(name).explain("read the staging table", err)
}

// createStagingTable makes an empty staging table with the main table's
// current schema, partitioning and clustering, so that the copy into the
// partition is a copy between two tables of the same shape. It has no
// partition expiration (a backfilled old date would vanish at once), only
// a table expiration. A leftover of an earlier generation is dropped first.
func (p *Publisher) createStagingTable(ctx context.Context, name string) error {
	sc := p.scope(name)
	md, err := p.dataset().Table(p.opts.Table).Metadata(ctx)
	if err != nil {
		return p.scope(p.opts.Table).explain("read the table", err)
	}
	var tp *bigquery.TimePartitioning
	if md.TimePartitioning != nil {
		tp = &bigquery.TimePartitioning{Type: md.TimePartitioning.Type, Field: md.TimePartitioning.Field}
	}
	t := p.dataset().Table(name)
	if err := t.Delete(ctx); err != nil && !isNotFound(err) {
		return sc.explain("drop the old staging table", err)
	}
	err = t.Create(ctx, &bigquery.TableMetadata{
		Description:      "Staging table of bindsync for one snapshot of " + p.opts.Table + "; dropped once copied, and expires by itself.",
		Schema:           md.Schema,
		ExpirationTime:   p.opts.Now().Add(p.opts.StagingTTL),
		TimePartitioning: tp,
		Clustering:       md.Clustering,
	})
	if err != nil {
		return sc.explain("create the staging table", err)
	}
	return nil
}

// uploadOptions fit the buffer of an upload to its size: the client
// otherwise allocates its default chunk (16 MiB) for every upload, however
// small. A part under one chunk goes in a single request, as it would
// with the default.
func uploadOptions(size int64) []googleapi.MediaOption {
	if size >= googleapi.DefaultUploadChunkSize {
		return nil
	}
	return []googleapi.MediaOption{googleapi.ChunkSize(int(size) + 1)}
}
