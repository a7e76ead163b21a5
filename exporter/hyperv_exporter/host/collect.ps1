# hyperv-exporter collection script, schema 1.
#
# Runs once per probe on a Hyper-V host under Windows PowerShell 5.1 and prints ONE document: JSON,
# or that JSON gzip-compressed and base64-encoded when -Gzip is given. Over WinRS the exporter ships
# this file in the shell's environment (HYPERV_EXPORTER_SCRIPT) and starts it with a short
# -EncodedCommand loader, so cmd.exe's 8,191-character command line limit never applies to it. Over
# PSRP it is the pipeline's script on a plain endpoint, or the body of the JEA endpoint's
# Get-HyperVExporterReport command.
#
# Rules this script keeps, and why:
# - Enums leave as their *names* ([string] casts): VMState numbers above 32782 differ between
#   Windows versions.
# - Integration services are reported with their Id (Microsoft:<VM>\<service GUID>); the exporter
#   keys on the GUID because Name is localized ("Takt" on a German host).
# - Every list is an array, also with zero or one element (ConvertTo-Json would otherwise print
#   one VM as a bare object and zero VMs as nothing).
# - A failing section (e.g. KVP through CIM) is reported in Sections and does not stop the others.
# - Success is exit code 0 plus a document that parses; stderr may carry progress records.
# - KVP items are passed on as the raw CIM-XML strings Hyper-V stores; the exporter parses them
#   with an XML parser that refuses entities and keeps only allowlisted keys.
param(
    [string]$Collectors = 'vm',
    [switch]$Gzip
)

$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
# The host clock at the script's first line. Over PSRP (a kept runspace) the process is already
# running; over WinRS it just started, and this reading comes after its start-up, so the exporter
# does not take the offset from the midpoint there (host/collectors/host.py).
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

function ConvertTo-Array($Value) {
    # @($null) is a one-element array in PowerShell; an absent value must become an empty one.
    if ($null -eq $Value) { return ,@() }
    return ,@($Value)
}

function ConvertTo-Ticks($Value) {
    if ($null -eq $Value) { return $null }
    return $Value.ToUniversalTime().Ticks
}

$vms = New-Object System.Collections.ArrayList
$hostInfo = [ordered]@{ ComputerName = $env:COMPUTERNAME; OSCaption = $null; OSVersion = $null; UICulture = $null }
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
}

Invoke-Section 'vm' { foreach ($v in @(Get-VM)) { [void]$vms.Add($v) } }

if ($want['integration_services']) {
    Invoke-Section 'integration_services' {
        if ($vms.Count -eq 0) { return }
        foreach ($ic in @(Get-VMIntegrationService -VM $vms.ToArray())) {
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
        # Msvm_KvpExchangeComponent exists only for running VMs; SystemName is the VM GUID.
        foreach ($k in @(Get-CimInstance -Namespace root/virtualization/v2 -ClassName Msvm_KvpExchangeComponent)) {
            $kvpGuest[([string]$k.SystemName).ToUpperInvariant()] = $k
        }
        # Host-to-guest items live on the setting data; its InstanceID starts with Microsoft:<VM GUID>.
        foreach ($s in @(Get-CimInstance -Namespace root/virtualization/v2 -ClassName Msvm_KvpExchangeComponentSettingData)) {
            if ([string]$s.InstanceID -match '([0-9A-Fa-f]{8}-(?:[0-9A-Fa-f]{4}-){3}[0-9A-Fa-f]{12})') {
                $kvpHost[$Matches[1].ToUpperInvariant()] = $s.HostExchangeItems
            }
        }
    }
}

if ($want['replication']) {
    Invoke-Section 'replication' {
        if ($vms.Count -eq 0) { return }
        foreach ($r in @(Get-VMReplication -ErrorAction SilentlyContinue)) {
            $replicas[([string]$r.VMId).ToUpperInvariant()] = $r
        }
    }
}

if ($want['checkpoints']) {
    Invoke-Section 'checkpoints' {
        if ($vms.Count -eq 0) { return }
        foreach ($s in @(Get-VMSnapshot -VM $vms.ToArray())) {
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
    if ($want['integration_services']) { $row.IntegrationServices = ConvertTo-Array $services[$id] }
    if ($want['kvp']) {
        $k = $kvpGuest[$id]
        $row.Kvp = if ($null -ne $k) {
            [ordered]@{
                GuestIntrinsicExchangeItems = ConvertTo-Array $k.GuestIntrinsicExchangeItems
                GuestExchangeItems = ConvertTo-Array $k.GuestExchangeItems
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
        $row.Replication = [ordered]@{
            State = [string]$vm.ReplicationState
            Health = [string]$vm.ReplicationHealth
            Mode = [string]$vm.ReplicationMode
            LastReplicationTimeTicks = if ($null -ne $r) { ConvertTo-Ticks $r.LastReplicationTime } else { $null }
        }
    }
    if ($want['checkpoints']) { $row.Checkpoints = ConvertTo-Array $checkpoints[$id] }
    [void]$rows.Add($row)
}

$doc = [ordered]@{
    SchemaVersion = 1
    Host = $hostInfo
    VMs = ConvertTo-Array $rows.ToArray()
    Sections = $sections
    ClockStartTicks = $clockStart
}
$json = ConvertTo-Json -InputObject $doc -Depth 8 -Compress
$json = $json.Substring(0, $json.Length - 1)

function Write-Document([string]$Text) {
    # Under powershell.exe (WinRS) the document goes to the console's stdout, without a trailing
    # newline. In a PSRP runspace (a remote session, the JEA command) there is no console: it is the
    # pipeline's output.
    if ($Host.Name -eq 'ConsoleHost') { [Console]::Out.Write($Text) } else { $Text }
}

# The end clock is read as late as possible and spliced in as the last member: after serialisation
# and, with -Gzip, after all but the last bytes went through the compressor. The exporter bounds the
# host clock offset by the time between this reading and the output's arrival (the return leg), so
# only the output itself should come between them; nothing is printed before it.
if ($Gzip) {
    $buffer = New-Object System.IO.MemoryStream
    $zipStream = New-Object System.IO.Compression.GZipStream($buffer, [IO.Compression.CompressionMode]::Compress)
    $bytes = [Text.Encoding]::UTF8.GetBytes($json)
    $zipStream.Write($bytes, 0, $bytes.Length)
    $bytes = [Text.Encoding]::UTF8.GetBytes(',"ClockEndTicks":' + [DateTime]::UtcNow.Ticks + '}')
    $zipStream.Write($bytes, 0, $bytes.Length)
    $zipStream.Close()
    Write-Document ([Convert]::ToBase64String($buffer.ToArray()))
} else {
    Write-Document ($json + ',"ClockEndTicks":' + [DateTime]::UtcNow.Ticks + '}')
}
