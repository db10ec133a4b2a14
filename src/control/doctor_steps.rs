//! The next steps `sekisho doctor` gives, in Japanese for the console and
//! in English for the CLI and the admin API. Words only: which step a
//! finding gets is decided in `doctor`.

/// What an administrator should do about a finding. A closed set, so that
/// each step has its words in both of the console's languages (the CLI and
/// the admin API speak English).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    FixConfig,
    AdminBehindTls,
    FixRules,
    PlaceCertificate,
    MatchKeyOrChain,
    TrustIssuer,
    RenewNow,
    RenewSoon,
    StoreAtFirstStart,
    StoreFileMode,
    RestoreStore,
    StoreTampered,
    CheckStoreFile,
    DatabaseTampered,
    CheckDatabase,
    AuditLogWritable,
    AuditDiskSpace,
    SigningKeyAtFirstStart,
    RestoreSigningKey,
    SetNtpServer,
    FixTimeSync,
    OpenNtpPort,
    UpstreamUnreachable,
    UpstreamSilent,
    UpstreamPlainHttp,
    FixRouteCaFile,
    FixRouteUpstream,
    UpstreamCertificate,
    TlsIntercepted,
}

impl Step {
    /// The step in Japanese and in English.
    pub fn words(self) -> (&'static str, &'static str) {
        match self {
            Step::FixConfig => (
                "設定ファイルを直してください。`sekisho check-config` でも同じエラーが表示されます",
                "fix the file; `sekisho check-config` shows the same error",
            ),
            Step::AdminBehindTls => (
                "このホストの TLS プロキシだけが管理 API に届くようにするか、[admin.tls] を設定してください",
                "make sure a TLS proxy on this host is the only way to reach it, or add [admin.tls]",
            ),
            Step::FixRules => (
                "ルールファイルを直してください。このままでは再読み込みも同じ理由で拒否されます",
                "fix the rules file; a reload would be refused the same way",
            ),
            Step::PlaceCertificate => (
                "[tls] に書いた場所に PEM の証明書チェーン（と鍵）を置き、ゲートウェイから読めるようにしてください",
                "put the PEM chain (and key) where [tls] says, readable by the gateway",
            ),
            Step::MatchKeyOrChain => (
                "証明書に対応する鍵、または完全なチェーン（サーバー証明書、続けて中間証明書）を置いてください",
                "install the matching key, or the full chain (leaf first, then intermediates)",
            ),
            Step::TrustIssuer => (
                "すべての端末がその発行者を信頼していることを確かめるか、中間証明書をファイルに加えてください",
                "make sure every client trusts that issuer, or add the intermediate to the file",
            ),
            Step::RenewNow => (
                "今すぐ更新してください。期限切れの証明書は端末に拒否されます",
                "renew it now: clients refuse an expired certificate",
            ),
            Step::RenewSoon => (
                "発行元の認証局で更新してファイルを置き換え、ゲートウェイを再起動または入れ替え（upgrade）してください",
                "renew it from the issuing CA, replace the file, and restart or upgrade the gateway",
            ),
            Step::StoreAtFirstStart => (
                "ゲートウェイの初回起動時に作成されます",
                "it is created at the gateway's first start",
            ),
            Step::StoreFileMode => (
                "ファイルの所有者と権限を確認してください（ゲートウェイの実行ユーザーが読み書きできる必要があります）",
                "check the file's owner and mode (the gateway's user must read and write it)",
            ),
            Step::RestoreStore => (
                "バックアップから管理データを復元してください。読めない間、ゲートウェイはすべての要求を拒否します",
                "restore the store from backup; the gateway refuses requests while it cannot read it",
            ),
            Step::StoreTampered => (
                "改ざんされたものとして扱い、バックアップと照合して監査担当に知らせてください",
                "treat the store as tampered with: compare with a backup and tell the auditor",
            ),
            Step::CheckStoreFile => (
                "管理データのファイルを確認してください",
                "check the store file",
            ),
            Step::DatabaseTampered => (
                "データベースが改ざんされたものとして扱い、バックアップと照合して監査担当に知らせてください",
                "treat the database as tampered with: compare with a backup and tell the auditor",
            ),
            Step::CheckDatabase => (
                "データベースが動いているか、URL とパスワードの取得元が正しいか、TLS の CA が合っているかを確認してください",
                "check that the database is up, the URL and password source are right, and its TLS CA matches",
            ),
            Step::AuditLogWritable => (
                "ゲートウェイの実行ユーザーに書き込み権限を与えてください（systemd ユニットの ReadWritePaths）。記録できない要求はすべて拒否されます",
                "give the gateway's user write access (ReadWritePaths in the unit); it refuses requests it cannot record",
            ),
            Step::AuditDiskSpace => (
                "空き容量を増やすか、[audit] retention_days を短くしてください。空きが 0 になるとゲートウェイはすべての要求を拒否します",
                "free space or lower [audit] retention_days; at 0 bytes the gateway refuses all requests",
            ),
            Step::SigningKeyAtFirstStart => (
                "ゲートウェイの初回起動時に作成されます。作成後に公開鍵を書き出してください: sekisho audit public-key",
                "it is created at the gateway's first start; then export it: sekisho audit public-key",
            ),
            Step::RestoreSigningKey => (
                "バックアップから鍵を復元するか、退避して新しい鍵で始めてください（新しい公開鍵を監査担当に伝えてください）",
                "restore the key from backup, or move it aside to start a new one (tell the auditors the new public key)",
            ),
            Step::SetNtpServer => (
                "[clock] に市の NTP サーバーを設定し、chrony または systemd-timesyncd を動かし続けてください（timedatectl）",
                "set the city's NTP server under [clock], and keep chrony or systemd-timesyncd running (timedatectl)",
            ),
            Step::FixTimeSync => (
                "時刻同期を直してください（chronyc tracking / timedatectl timesync-status）。利用時間帯とトークンの時刻はこの時計で判定されます",
                "fix time sync (chronyc tracking / timedatectl timesync-status): hours and token times are judged on this clock",
            ),
            Step::OpenNtpPort => (
                "このホストから NTP サーバーへの UDP 123 番が通るか確認してください",
                "check that UDP 123 to the NTP server is open from this host",
            ),
            Step::UpstreamUnreachable => (
                "このホストから SaaS までの名前解決、経路、ファイアウォールを確認してください",
                "check DNS, routing and the firewall from this host to the SaaS",
            ),
            Step::UpstreamSilent => (
                "このホストから SaaS までの経路とファイアウォールを確認してください",
                "check routing and the firewall from this host to the SaaS",
            ),
            Step::UpstreamPlainHttp => (
                "同じホスト上のサービスでない限り、接続先は https:// にしてください",
                "use an https:// upstream unless it is on this host",
            ),
            Step::FixRouteCaFile => (
                "ルートの ca_file を直してください",
                "fix the route's ca_file",
            ),
            Step::FixRouteUpstream => (
                "ルートの upstream を直してください",
                "fix the route's upstream",
            ),
            Step::UpstreamCertificate => (
                "接続先の証明書は、その名前に有効で、信頼されている必要があります（同梱のルート証明書、またはルートの ca_file）",
                "the upstream's certificate must be valid for its name and trusted (the bundled web roots, or the route's ca_file)",
            ),
            Step::TlsIntercepted => (
                "経路の途中で TLS を傍受する機器がないか確認してください",
                "check that nothing on the path intercepts TLS",
            ),
        }
    }

    pub fn en(self) -> &'static str {
        self.words().1
    }
}
