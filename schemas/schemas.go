// Package schemas holds the Arrow schemas of the rows bindsync writes (a
// binding, a user, a change), what a privacy policy makes of them, and the
// conversions between rows and Arrow records. Everything else that describes
// a row (the Parquet files of the exporter, the BigQuery tables, whose
// schemas package bq derives) comes from them, so a column is added or
// changed in one place and the golden files in testdata/ (and bq's) show the
// change in review. It depends on no cloud client.
package schemas

import (
	"github.com/apache/arrow-go/v18/arrow"
)

// DescriptionKey is the field metadata key holding a column's description.
// BigQuery column descriptions are taken from it (bq.Schema).
const DescriptionKey = "description"

// Column names of a binding row, in schema order.
const (
	ColSID           = "sid"
	ColAccountSID    = "account_sid"
	ColServiceSID    = "service_sid"
	ColDateCreated   = "date_created"
	ColDateUpdated   = "date_updated"
	ColEndpoint      = "endpoint"
	ColIdentity      = "identity"
	ColUserSID       = "user_sid"
	ColCredentialSID = "credential_sid"
	ColBindingType   = "binding_type"
	ColMessageTypes  = "message_types"
	ColURL           = "url"
	ColSnapshotDate  = "snapshot_date"
	ColSyncedAt      = "synced_at"
)

// UniqueColumns are the columns whose values rarely repeat within a part
// (a binding's SID, endpoint and URL, its timestamps): Parquet writes them
// without a dictionary.
var UniqueColumns = []string{ColSID, ColEndpoint, ColURL, ColDateCreated, ColDateUpdated}

// Positions of the columns in the schema; AppendBinding and
// BindingsFromRecord rely on them, and a test pins them to the names above.
const (
	idxSID = iota
	idxAccountSID
	idxServiceSID
	idxDateCreated
	idxDateUpdated
	idxEndpoint
	idxIdentity
	idxUserSID
	idxCredentialSID
	idxBindingType
	idxMessageTypes
	idxURL
	idxSnapshotDate
	idxSyncedAt
	numColumns
)

// timestampUTC is the type of every instant in a row: microseconds are what
// BigQuery TIMESTAMP keeps, and the zone makes Parquet mark the column as
// adjusted to UTC, so loaders read it as TIMESTAMP rather than DATETIME.
var timestampUTC = &arrow.TimestampType{Unit: arrow.Microsecond, TimeZone: "UTC"}

// messageTypesType names its element "element", the name the Parquet list
// layout uses, so the Arrow schema stored in a Parquet file reads back equal.
var messageTypesType = arrow.ListOfField(arrow.Field{Name: "element", Type: arrow.BinaryTypes.String, Nullable: false})

// column describes one field of the schema before it is built.
type column struct {
	name        string
	typ         arrow.DataType
	nullable    bool
	description string
}

// columns lists the row layout. Every field of the API is nullable. The
// API reference makes binding_type required, but servers have sent it null:
// the null is kept (and counted as a contract violation, see Violations)
// rather than replaced by a made-up value. The two columns that bindsync
// adds are always set.
var columns = [numColumns]column{
	idxSID:           {ColSID, arrow.BinaryTypes.String, true, "The unique string that we created to identify the User Binding resource."},
	idxAccountSID:    {ColAccountSID, arrow.BinaryTypes.String, true, "The SID of the Account that created the User Binding resource."},
	idxServiceSID:    {ColServiceSID, arrow.BinaryTypes.String, true, "The SID of the Service the User Binding resource is associated with."},
	idxDateCreated:   {ColDateCreated, timestampUTC, true, "The date and time in GMT when the resource was created specified in ISO 8601 format."},
	idxDateUpdated:   {ColDateUpdated, timestampUTC, true, "The date and time in GMT when the resource was last updated specified in ISO 8601 format."},
	idxEndpoint:      {ColEndpoint, arrow.BinaryTypes.String, true, "The unique endpoint identifier for the User Binding. The format of the value depends on the binding_type."},
	idxIdentity:      {ColIdentity, arrow.BinaryTypes.String, true, "The application-defined string that uniquely identifies the resource's User within the Service. See access tokens for more info."},
	idxUserSID:       {ColUserSID, arrow.BinaryTypes.String, true, "The SID of the User with the User Binding resource. See push notification configuration for more info."},
	idxCredentialSID: {ColCredentialSID, arrow.BinaryTypes.String, true, "The SID of the Credential for the binding. See push notification configuration for more info."},
	idxBindingType:   {ColBindingType, arrow.BinaryTypes.String, true, "The push technology to use for the User Binding. Can be: apn, gcm, or fcm. See push notification configuration for more info."},
	idxMessageTypes:  {ColMessageTypes, messageTypesType, true, "The Programmable Chat message types the binding is subscribed to."},
	idxURL:           {ColURL, arrow.BinaryTypes.String, true, "The absolute URL of the User Binding resource."},
	idxSnapshotDate:  {ColSnapshotDate, arrow.FixedWidthTypes.Date32, false, "UTC date of the snapshot this row belongs to (partition column)."},
	idxSyncedAt:      {ColSyncedAt, timestampUTC, false, "When bindsync read this row from Twilio (UTC)."},
}

// binding is built once; arrow schemas are immutable, so sharing it is safe.
var binding = buildFrom(columns[:])

// Binding returns the Arrow schema of a binding row. The same value is
// returned on every call and must not be modified.
func Binding() *arrow.Schema { return binding }

// Description returns the description of the column field, or "" if the
// schema has no such column.
func Description(field string) string {
	for _, c := range columns {
		if c.name == field {
			return c.description
		}
	}
	return ""
}
