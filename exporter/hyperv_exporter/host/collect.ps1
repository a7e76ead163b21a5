# hyperv-exporter collection script, schema 1.
#
# Runs once per probe on a Hyper-V host under Windows PowerShell and prints ONE document: JSON,
# or that JSON gzip-compressed and base64-encoded when -Gzip is given. The exporter ships this
# file in the WinRS shell's environment (HYPERV_EXPORTER_SCRIPT) and starts it with a short
# -EncodedCommand loader, so cmd.exe's 8,191-character command line limit never applies to it.
#
# Rules this script keeps, and why:
# - Enums leave as their *names* ([string] casts): VMState numbers above 32782 differ between
#   Windows versions.
# - Integration services are reported with their Id (Microsoft:<VM>\<service GUID>); the exporter
#   keys on the GUID because Name is localized ("Takt" on a German host).
# - Every list is an array, also with zero or one element (ConvertTo-Json would otherwise print
#   one VM as a bare object and zero VMs as nothing).
# - A failing section (e.g. KVP through CIM) is reported in Sections and does not stop the others.
# - A failing VM costs only its own data: a VM that vanished after Get-VM (deleted, or live-migrated
#   to another cluster node) or has no integration components makes a call over all VMs throw, so
#   such a call is retried one VM at a time and each VM's error goes into VMProblems (section, VM,
#   message); the section itself and the other VMs' data stay.
# - Success is exit code 0 plus a document that parses; stderr may carry progress records.
# - KVP items are passed on as the raw CIM-XML strings Hyper-V stores; the exporter parses them
#   with an XML parser that refuses entities and keeps only allowlisted keys. With -KvpKeys only
#   the items whose text contains one of those keys (as CIM-XML writes it) leave the host: the same
#   pre-filter the exporter applies, so the result is the same while a large host serialises and
#   sends a fraction of the data (docs/performance.md, "Large hosts").
# - Windows PowerShell 3.0 or later (Windows Server 2012 and 2012 R2 without WMF 5.1 included):
#   nothing newer than 3.0 ([ordered], Get-CimInstance, ConvertTo-Json) is used; no classes,
#   ::new(), using or PowerShell 5 operators (docs/deployment.md lists the supported versions).
param(
    [string]$Collectors = 'vm',
    [string[]]$KvpKeys = @(),
    [switch]$Gzip
)

$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
$clockStart = [DateTime]::UtcNow.Ticks
try { [Console]::OutputEncoding = New-Object System.Text.UTF8Encoding $false } catch { }

$want = @{}
foreach ($c in $Collectors.Split(',')) { $want[$c.Trim()] = $true }
$sections = [ordered]@{}

function Invoke-Section([string]$Name, [scriptblock]$Body) {
    # Runs one collector's queries; its duration and error (if any) go into the Sections table.
    $sw = [Diagnostics.Stopwatch]::StartNew()
    $err = $null
    try { . $Body } catch { $err = $_.Exception.Message }
    $sections[$Name] = [ordered]@{ Seconds = $sw.Elapsed.TotalSeconds; Error = $err }
}

function Add-VMProblem([string]$Section, $VM, $ErrorRecord) {
    [void]$vmProblems.Add([ordered]@{
        Section = $Section
        Name = [string]$VM.Name
        Id = [string]$VM.Id
        Error = [string]$ErrorRecord.Exception.Message
    })
}

function Invoke-PerVM([string]$Section, [scriptblock]$All, [scriptblock]$One) {
    # One call for every VM (the fast path); if it throws, one call per VM, so that a VM that
    # vanished or has no integration components loses only its own data (a VMProblems entry).
    try { return ,@(& $All) } catch { }
    $results = New-Object System.Collections.ArrayList
    foreach ($v in $vms) {
        try { foreach ($item in @(& $One $v)) { [void]$results.Add($item) } }
        catch { Add-VMProblem $Section $v $_ }
    }
    return ,$results.ToArray()
}

function Test-VMProblem([string]$Section, [string]$Id) {
    foreach ($p in $vmProblems) { if ($p.Section -eq $Section -and ([string]$p.Id).ToUpperInvariant() -eq $Id) { return $true } }
    return $false
}

function ConvertTo-Array($Value) {
    # @($null) is a one-element array in PowerShell; an absent value must become an empty one.
    if ($null -eq $Value) { return ,@() }
    return ,@($Value)
}

# -KvpKeys as one case-sensitive pattern: each key XML-escaped like the exporter's needles, then
# regex-escaped. `$array -cmatch` filters the whole array in one operation, not one pipeline step per item.
$kvpPattern = $null
if ($KvpKeys.Count -gt 0) {
    $kvpPattern = @($KvpKeys | ForEach-Object { [regex]::Escape($_.Replace('&', '&amp;').Replace('<', '&lt;').Replace('>', '&gt;')) }) -join '|'
}

function Select-KvpItem($Items) {
    $all = ConvertTo-Array $Items
    if ($null -eq $kvpPattern -or $all.Count -eq 0) { return ,$all }
    return ,@($all -cmatch $kvpPattern)
}

function ConvertTo-Ticks($Value) {
    if ($null -eq $Value) { return $null }
    return $Value.ToUniversalTime().Ticks
}

$vms = New-Object System.Collections.ArrayList
$vmProblems = New-Object System.Collections.ArrayList
$hostInfo = [ordered]@{
    ComputerName = $env:COMPUTERNAME; OSCaption = $null; OSVersion = $null; UICulture = $null; Cluster = $null; ClusterError = $null
}
$services = @{}
$kvpGuest = @{}
$kvpHost = @{}
$replicas = @{}
$checkpoints = @{}

Invoke-Section 'host' {
    $os = Get-CimInstance -ClassName Win32_OperatingSystem
    $hostInfo.OSCaption = $os.Caption
    $hostInfo.OSVersion = $os.Version
    $hostInfo.UICulture = (Get-UICulture).Name
    # The failover cluster this node belongs to. A host without the Failover Clustering feature has
    # no root/MSCluster namespace: that is "not clustered", not an error. Where the cluster service
    # exists but the query fails (e.g. no rights on the namespace), the reason is reported.
    try {
        $cluster = @(Get-CimInstance -Namespace root/MSCluster -ClassName MSCluster_Cluster -ErrorAction Stop)
        if ($cluster.Count -gt 0) { $hostInfo.Cluster = [string]$cluster[0].Name }
    } catch {
        $clusterError = $_.Exception.Message
        if ($null -ne (Get-Service -Name ClusSvc -ErrorAction SilentlyContinue)) { $hostInfo.ClusterError = $clusterError }
    }
}

Invoke-Section 'vm' { foreach ($v in @(Get-VM)) { [void]$vms.Add($v) } }

if ($want['integration_services']) {
    Invoke-Section 'integration_services' {
        if ($vms.Count -eq 0) { return }
        $all = Invoke-PerVM 'integration_services' { Get-VMIntegrationService -VM $vms.ToArray() } { param($v) Get-VMIntegrationService -VM $v }
        foreach ($ic in $all) {
            $key = ([string]$ic.VMId).ToUpperInvariant()
            if (-not $services.ContainsKey($key)) { $services[$key] = New-Object System.Collections.ArrayList }
            [void]$services[$key].Add([ordered]@{
                Id = $ic.Id
                Name = $ic.Name
                Enabled = [bool]$ic.Enabled
                PrimaryOperationalStatus = if ($null -ne $ic.PrimaryOperationalStatus) { [string]$ic.PrimaryOperationalStatus } else { $null }
                PrimaryStatusDescription = $ic.PrimaryStatusDescription
                SecondaryOperationalStatus = if ($null -ne $ic.SecondaryOperationalStatus) { [string]$ic.SecondaryOperationalStatus } else { $null }
                SecondaryStatusDescription = $ic.SecondaryStatusDescription
            })
        }
    }
}

if ($want['kvp']) {
    Invoke-Section 'kvp' {
        # Msvm_KvpExchangeComponent exists only for running VMs; SystemName is the VM GUID. Both
        # queries cover every VM at once and a VM that vanished simply has no instance: no per-VM errors.
        # The instances stream through the pipeline and only their (-KvpKeys filtered) items are kept,
        # so a large host does not hold every VM's full KVP data at once.
        Get-CimInstance -Namespace root/virtualization/v2 -ClassName Msvm_KvpExchangeComponent | ForEach-Object {
            $kvpGuest[([string]$_.SystemName).ToUpperInvariant()] = [ordered]@{
                Intrinsic = Select-KvpItem $_.GuestIntrinsicExchangeItems
                Guest = Select-KvpItem $_.GuestExchangeItems
            }
        }
        # Host-to-guest items live on the setting data; its InstanceID starts with Microsoft:<VM GUID>.
        Get-CimInstance -Namespace root/virtualization/v2 -ClassName Msvm_KvpExchangeComponentSettingData | ForEach-Object {
            if ([string]$_.InstanceID -match '([0-9A-Fa-f]{8}-(?:[0-9A-Fa-f]{4}-){3}[0-9A-Fa-f]{12})') {
                $kvpHost[$Matches[1].ToUpperInvariant()] = Select-KvpItem $_.HostExchangeItems
            }
        }
    }
}

if ($want['replication']) {
    Invoke-Section 'replication' {
        if ($vms.Count -eq 0) { return }
        # State, health and mode come from Get-VMReplication: Get-VM's ReplicationState has been seen
        # to disagree with it. Only VMs that take part in replication have such an object.
        $all = Invoke-PerVM 'replication' { Get-VMReplication } {
            param($v) if ([string]$v.ReplicationMode -ne 'None') { Get-VMReplication -VM $v }
        }
        foreach ($r in $all) {
            # Extended replication gives a VM two relationships; the Simple one (primary <-> replica) is used.
            $key = ([string]$r.VMId).ToUpperInvariant()
            if (-not $replicas.ContainsKey($key) -or [string]$r.ReplicationRelationshipType -eq 'Simple') { $replicas[$key] = $r }
        }
    }
}

if ($want['checkpoints']) {
    Invoke-Section 'checkpoints' {
        if ($vms.Count -eq 0) { return }
        $all = Invoke-PerVM 'checkpoints' { Get-VMSnapshot -VM $vms.ToArray() } { param($v) Get-VMSnapshot -VM $v }
        foreach ($s in $all) {
            $key = ([string]$s.VMId).ToUpperInvariant()
            if (-not $checkpoints.ContainsKey($key)) { $checkpoints[$key] = New-Object System.Collections.ArrayList }
            [void]$checkpoints[$key].Add([ordered]@{
                SnapshotType = [string]$s.SnapshotType
                CreationTimeTicks = ConvertTo-Ticks $s.CreationTime
            })
        }
    }
}

$rows = New-Object System.Collections.ArrayList
foreach ($vm in $vms) {
  try {
    $id = ([string]$vm.Id).ToUpperInvariant()
    $row = [ordered]@{
        Name = $vm.Name
        Id = [string]$vm.Id
        State = [string]$vm.State
        Status = $vm.Status
        Heartbeat = if ($null -ne $vm.Heartbeat) { [string]$vm.Heartbeat } else { $null }
        UptimeSeconds = $vm.Uptime.TotalSeconds
        IntegrationServicesVersion = if ($null -ne $vm.IntegrationServicesVersion) { [string]$vm.IntegrationServicesVersion } else { $null }
        IntegrationServicesState = $vm.IntegrationServicesState
        Generation = $vm.Generation
        Version = $vm.Version
        IsClustered = [bool]$vm.IsClustered
    }
    # A VM with a VMProblems entry for a section gets null there (its data is unknown), not an empty list.
    if ($want['integration_services']) {
        $row.IntegrationServices = if ($services.ContainsKey($id) -or -not (Test-VMProblem 'integration_services' $id)) { ConvertTo-Array $services[$id] } else { $null }
    }
    if ($want['kvp']) {
        $k = $kvpGuest[$id]
        $row.Kvp = if ($null -ne $k) {
            [ordered]@{
                GuestIntrinsicExchangeItems = $k.Intrinsic
                GuestExchangeItems = $k.Guest
                HostExchangeItems = ConvertTo-Array $kvpHost[$id]
            }
        } else { $null }
    }
    if ($want['resources']) {
        $row.Resources = [ordered]@{
            ProcessorCount = $vm.ProcessorCount
            CPUUsage = $vm.CPUUsage
            MemoryAssigned = $vm.MemoryAssigned
            MemoryDemand = $vm.MemoryDemand
            MemoryStartup = $vm.MemoryStartup
            DynamicMemoryEnabled = [bool]$vm.DynamicMemoryEnabled
        }
    }
    if ($want['replication']) {
        $r = $replicas[$id]
        $row.Replication = if ($null -ne $r) {
            # VMReplication's own properties (the table view shows them as State, Health, Mode).
            [ordered]@{
                State = [string]$r.ReplicationState
                Health = [string]$r.ReplicationHealth
                Mode = [string]$r.ReplicationMode
                LastReplicationTimeTicks = ConvertTo-Ticks $r.LastReplicationTime
            }
        } elseif (Test-VMProblem 'replication' $id) { $null }
        else { [ordered]@{ State = 'Disabled'; Health = 'NotApplicable'; Mode = 'None'; LastReplicationTimeTicks = $null } }
    }
    if ($want['checkpoints']) {
        $row.Checkpoints = if ($checkpoints.ContainsKey($id) -or -not (Test-VMProblem 'checkpoints' $id)) { ConvertTo-Array $checkpoints[$id] } else { $null }
    }
    [void]$rows.Add($row)
  } catch { Add-VMProblem 'vm' $vm $_ }
}

# The document goes out in parts: ConvertTo-Json builds its whole text in one StringBuilder (about
# 8 bytes of memory a character at its peak), which for a large host with KVP was the biggest part of
# the script's memory (WinRS MaxMemoryPerShellMB; docs/performance.md, "Large hosts"). One batch of
# VMs at a time keeps that to a batch's size; with -Gzip only the compressed bytes are held. The
# text is the same as one ConvertTo-Json of the whole document (-Compress adds no whitespace).
# ConvertTo-Json -InputObject keeps an array an array, also with one element or none.
# Under powershell.exe (WinRS) the parts go straight to the console's stdout, without a trailing
# newline. In a remote session (PSRP, a JEA command) there is no console: the document is collected
# and leaves as the pipeline's one output.
$toConsole = $Host.Name -eq 'ConsoleHost'
$utf8 = New-Object System.Text.UTF8Encoding $false
$collected = New-Object System.Text.StringBuilder
$zipBuffer = $null
$zipStream = $null
if ($Gzip) {
    $zipBuffer = New-Object System.IO.MemoryStream
    $zipStream = New-Object System.IO.Compression.GZipStream($zipBuffer, [IO.Compression.CompressionMode]::Compress)
}

function Write-Part([string]$Text) {
    if ($null -ne $zipStream) {
        $bytes = $utf8.GetBytes($Text)
        $zipStream.Write($bytes, 0, $bytes.Length)
    } elseif ($toConsole) {
        [Console]::Out.Write($Text)
    } else {
        [void]$collected.Append($Text)
    }
}

# The members before and after VMs are serialised as objects and cut open: {"SchemaVersion":1,...,"VMs":[
$head = [ordered]@{
    SchemaVersion = 1
    Host = $hostInfo
}
$json = ConvertTo-Json -InputObject $head -Depth 8 -Compress
Write-Part ($json.Substring(0, $json.Length - 1) + ',"VMs":[')
$batchSize = 100
for ($i = 0; $i -lt $rows.Count; $i += $batchSize) {
    $batch = $rows.GetRange($i, [Math]::Min($batchSize, $rows.Count - $i)).ToArray()
    $part = ConvertTo-Json -InputObject $batch -Depth 8 -Compress
    if ($i -gt 0) { Write-Part ',' }
    Write-Part $part.Substring(1, $part.Length - 2)
}
$tail = [ordered]@{
    Sections = $sections
    VMProblems = ConvertTo-Array $vmProblems.ToArray()
    ClockStartTicks = $clockStart
}
$json = ConvertTo-Json -InputObject $tail -Depth 8 -Compress
# The end-of-run clock is read as late as possible, after everything but this last part was
# serialised (and compressed): the exporter computes the host clock offset NTP-style from both
# readings and its own send/receive times.
Write-Part ('],' + $json.Substring(1, $json.Length - 2) + ',"ClockEndTicks":' + [DateTime]::UtcNow.Ticks + '}')
$output = $null
if ($null -ne $zipStream) {
    $zipStream.Close()
    $output = [Convert]::ToBase64String($zipBuffer.ToArray())
} elseif (-not $toConsole) {
    $output = $collected.ToString()
}
if ($null -ne $output) {
    if ($toConsole) { [Console]::Out.Write($output) } else { $output }
}
