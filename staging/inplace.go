package staging

// InPlace is implemented by stores whose objects a loader in Google Cloud
// (a BigQuery load job) can read where they lie, without an upload. A
// publisher finds it by type assertion: stores that do not implement it
// (a local directory) have their objects uploaded instead. The GCS store
// (staging/gcs) implements it.
type InPlace interface {
	// GCSURI returns gs://bucket/object of the object name, and true; or
	// false when this store cannot offer name in place.
	GCSURI(name string) (uri string, ok bool)
}
