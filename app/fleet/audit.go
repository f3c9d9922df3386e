package fleet

import "time"

// Kinds of audit entries.
const (
	AuditCommand      = "command"
	AuditScale        = "scale"
	AuditSettings     = "settings"
	AuditSilence      = "silence"
	AuditNotification = "notification"
	AuditCleanup      = "cleanup"
)

// AuditEntry records who changed what, and when.
type AuditEntry struct {
	At       time.Time
	Actor    string // the Basic-auth username, "api", or "auto"
	Source   string // SourceUI, SourceAPI or SourceAuto
	Kind     string
	Action   string
	WorkerID string
	Pool     string
	Before   string
	After    string
	Reason   string
}
