<#
.SYNOPSIS
    Records what hyperv-exporter's collection returns on this Hyper-V host, so that the simulator
    can replay it (hyperv-sim --replay FILE) and the project can test against real output.

.DESCRIPTION
    Runs the shipped collect.ps1 exactly as the exporter does over WinRS: a new
    powershell.exe -NoLogo -NoProfile -NonInteractive -EncodedCommand <loader>, with the script in
    the HYPERV_EXPORTER_SCRIPT environment variable, -Collectors listing every section the script
    knows, and -Gzip. It records the output (inflated), stderr, exit code, wall time and the
    process's peak memory, plus the OS, PowerShell, .NET and culture versions, the WinRM quotas it
    can read and which groups the account is in. Nothing is sent anywhere: the result is one JSON
    file (see docs/simulator.md, "Capturing a real host").

    Run it AS THE MONITORING ACCOUNT, where the exporter's commands run: best in a remote session
    (Enter-PSSession <host> -Credential <monitoring account>), which is a network logon like the
    exporter's. Run it in Windows PowerShell (powershell.exe), not PowerShell 7.

    -Pseudonymize replaces the host's, its cluster's and the VMs' names, the VM Ids (also inside integration-service
    Ids and error messages) and KVP values, consistently: the same original always gets the same
    pseudonym, so relations survive. KVP values that describe software (OSName, OSVersion,
    IntegrationServicesVersion, ...) are kept; addresses map to 198.18.0.0/15 and 2001:db8::/32.
    Read the file before you share it: free text in error messages is only partly covered.

.EXAMPLE
    PS> Enter-PSSession hv01.corp.example -Credential CORP\svc-hyperv-monitor
    [hv01]: PS> & C:\Temp\hyperv-capture\capture-collection.ps1 -Pseudonymize -Note '2012 R2, WMF 4.0, 400 VMs'
#>
[CmdletBinding()]
param(
    # collect.ps1 as shipped with the exporter (exporter/hyperv_exporter/host/collect.ps1).
    [string]$ScriptPath = '',
    # Where the capture goes (JSON, UTF-8).
    [string]$OutFile = '',
    # Sections to collect (comma-separated); default: every section collect.ps1 knows.
    [string]$Collectors = '',
    # KVP keys to filter on the host (collect.ps1 -KvpKeys), as a module's kvp.keys would.
    [string[]]$KvpKeys = @(),
    [switch]$Pseudonymize,
    [switch]$NoGzip,
    # How many runs (the first imports the Hyper-V module; later ones show the steady state).
    [int]$Runs = 1,
    [int]$TimeoutSeconds = 600,
    # Free text for the project: host generation, WMF version, anything unusual.
    [string]$Note = ''
)

$ErrorActionPreference = 'Stop'
Set-StrictMode -Version 2.0
$CaptureTool = 'capture-collection.ps1 1'

if ($PSVersionTable.ContainsKey('PSEdition') -and $PSVersionTable.PSEdition -eq 'Core') {
    throw 'Run this in Windows PowerShell (powershell.exe), which is what the exporter runs.'
}
if (-not $ScriptPath) { $ScriptPath = Join-Path $PSScriptRoot 'collect.ps1' }
if (-not $OutFile) { $OutFile = 'hyperv-capture-{0}.json' -f [DateTime]::UtcNow.ToString('yyyyMMdd-HHmmss') }
$OutFile = $ExecutionContext.SessionState.Path.GetUnresolvedProviderPathFromPSPath($OutFile)

Add-Type -AssemblyName System.Web.Extensions
$serializer = New-Object System.Web.Script.Serialization.JavaScriptSerializer
# The default (2,097,152 characters) is what limits ConvertTo-Json/ConvertFrom-Json on 3.0/4.0.
$serializer.MaxJsonLength = [int]::MaxValue
$serializer.RecursionLimit = 256
$captureErrors = New-Object System.Collections.ArrayList

# -- the script and the command, as hyperv_exporter/host/script.py builds them ------------------------
# The exporter sends the script with LF line ends.
$scriptText = [IO.File]::ReadAllText((Resolve-Path -LiteralPath $ScriptPath).ProviderPath).Replace("`r`n", "`n")
# Recorded as ScriptSha256: the hash collect.ps1 reports as its ScriptHash (host/script.py text_hash;
# HyperVExporterEndpoint.ps1 stamps the same): no BOM, LF line ends, the hash stamp line emptied.
# In the replacement "$$" is a literal "$" (.NET, "Substitutions in Regular Expressions").
$HashLinePattern = '(?m)^\$scriptHash = ''[0-9a-f]*''$'
$canonicalText = [regex]::Replace($scriptText.TrimStart([char]0xFEFF), $HashLinePattern, "`$`$scriptHash = ''")
$sha = [Security.Cryptography.SHA256]::Create()
$scriptHash = -join ($sha.ComputeHash((New-Object Text.UTF8Encoding $false).GetBytes($canonicalText)) | ForEach-Object { $_.ToString('x2') })

if (-not $Collectors) {
    $found = New-Object System.Collections.ArrayList
    foreach ($m in [regex]::Matches($scriptText, "Invoke-Section '(\w+)'|\`$want\['(\w+)'\]")) {
        $name = if ($m.Groups[1].Success) { $m.Groups[1].Value } else { $m.Groups[2].Value }
        if (-not $found.Contains($name)) { [void]$found.Add($name) }
    }
    $Collectors = $found.ToArray() -join ','
}

function ConvertTo-PSLiteral([string]$Text) {
    # A single-quoted string; PowerShell also takes U+2018..U+201B as quotes, so they are doubled too.
    foreach ($q in @("'", [string][char]0x2018, [string][char]0x2019, [string][char]0x201A, [string][char]0x201B)) {
        $Text = $Text.Replace($q, $q + $q)
    }
    return "'" + $Text + "'"
}

$loader = '& ([ScriptBlock]::Create($env:HYPERV_EXPORTER_SCRIPT)) -Collectors ' + (ConvertTo-PSLiteral $Collectors)
if ($KvpKeys.Count -gt 0) { $loader += ' -KvpKeys ' + (@($KvpKeys | ForEach-Object { ConvertTo-PSLiteral $_ }) -join ',') }
if (-not $NoGzip) { $loader += ' -Gzip' }
$encoded = [Convert]::ToBase64String([Text.Encoding]::Unicode.GetBytes($loader))
$powershell = Join-Path $env:SystemRoot 'System32\WindowsPowerShell\v1.0\powershell.exe'

function Expand-GzipBase64([string]$Text) {
    $compressed = New-Object System.IO.MemoryStream (, [Convert]::FromBase64String($Text.Trim()))
    $gzip = New-Object System.IO.Compression.GZipStream($compressed, [IO.Compression.CompressionMode]::Decompress)
    $output = New-Object System.IO.MemoryStream
    $gzip.CopyTo($output)
    $gzip.Close()
    return [Text.Encoding]::UTF8.GetString($output.ToArray())
}

function Invoke-Collection {
    # One run, as WinRS would start it; returns the run's record.
    $info = New-Object System.Diagnostics.ProcessStartInfo
    $info.FileName = $powershell
    $info.Arguments = '-NoLogo -NoProfile -NonInteractive -EncodedCommand ' + $encoded
    $info.UseShellExecute = $false
    $info.CreateNoWindow = $true
    $info.RedirectStandardOutput = $true
    $info.RedirectStandardError = $true
    $info.StandardOutputEncoding = New-Object System.Text.UTF8Encoding $false
    $info.EnvironmentVariables['HYPERV_EXPORTER_SCRIPT'] = $scriptText
    $peakPaged = [long]0
    $peakWorkingSet = [long]0
    $started = [DateTime]::UtcNow.Ticks
    $process = [Diagnostics.Process]::Start($info)
    $stdoutTask = $process.StandardOutput.ReadToEndAsync()
    $stderrTask = $process.StandardError.ReadToEndAsync()
    $deadline = [DateTime]::UtcNow.AddSeconds($TimeoutSeconds)
    while (-not $process.HasExited) {
        try {
            $process.Refresh()
            $peakPaged = [Math]::Max($peakPaged, $process.PeakPagedMemorySize64)
            $peakWorkingSet = [Math]::Max($peakWorkingSet, $process.PeakWorkingSet64)
        } catch { }
        if ([DateTime]::UtcNow -gt $deadline) {
            $process.Kill()
            [void]$captureErrors.Add("run killed after $TimeoutSeconds s")
            break
        }
        Start-Sleep -Milliseconds 50
    }
    $process.WaitForExit()
    $stdout = $stdoutTask.Result
    $stderr = $stderrTask.Result
    $ended = [DateTime]::UtcNow.Ticks
    $exitCode = $process.ExitCode
    $outputBytes = [Text.Encoding]::UTF8.GetByteCount($stdout)
    if ($exitCode -eq 0 -and -not $NoGzip -and $stdout.StartsWith('H4sI')) {
        try { $stdout = Expand-GzipBase64 $stdout } catch { [void]$captureErrors.Add('cannot inflate the output: ' + $_.Exception.Message) }
    }
    return [ordered]@{
        Collectors = $Collectors
        KvpKeys = if ($KvpKeys.Count -gt 0) { [string[]]$KvpKeys } else { $null }
        Gzip = -not $NoGzip
        StartedTicks = [long]$started
        EndedTicks = [long]$ended
        Seconds = [double](($ended - $started) / 1e7)
        ExitCode = [int]$exitCode
        OutputBytes = [long]$outputBytes
        PeakMemoryBytes = [long]$peakPaged
        PeakWorkingSetBytes = [long]$peakWorkingSet
        Stdout = [string]$stdout
        Stderr = [string]$stderr
    }
}

# -- the environment -----------------------------------------------------------------------------------
function Get-Safely([scriptblock]$Body) {
    # Many of these need rights the monitoring account may not have: record null and the reason.
    try { return (& $Body) } catch { [void]$captureErrors.Add($_.Exception.Message); return $null }
}

$identity = [Security.Principal.WindowsIdentity]::GetCurrent()
$principal = New-Object Security.Principal.WindowsPrincipal $identity
$os = Get-Safely { Get-CimInstance -ClassName Win32_OperatingSystem }
$environment = [ordered]@{
    ComputerName = [string]$env:COMPUTERNAME
    OSCaption = if ($os) { [string]$os.Caption } else { $null }
    OSVersion = if ($os) { [string]$os.Version } else { $null }
    OSLanguage = if ($os) { [string]$os.OSLanguage } else { $null }
    PSVersion = $PSVersionTable.PSVersion.ToString()
    CLRVersion = $PSVersionTable.CLRVersion.ToString()
    WSManStackVersion = $PSVersionTable.WSManStackVersion.ToString()
    DotNetRelease = Get-Safely { [string](Get-ItemProperty 'HKLM:\SOFTWARE\Microsoft\NET Framework Setup\NDP\v4\Full').Release }
    HyperVModules = Get-Safely { [string[]]@(Get-Module -ListAvailable -Name Hyper-V | ForEach-Object { $_.Version.ToString() }) }
    Culture = (Get-Culture).Name
    UICulture = (Get-UICulture).Name
    ConsoleCodePage = Get-Safely { [int][Console]::OutputEncoding.CodePage }
    Account = [string]$identity.Name
    Administrator = $principal.IsInRole([Security.Principal.WindowsBuiltInRole]::Administrator)
    HyperVAdministrators = $principal.IsInRole((New-Object Security.Principal.SecurityIdentifier 'S-1-5-32-578'))
    RemoteManagementUsers = $principal.IsInRole((New-Object Security.Principal.SecurityIdentifier 'S-1-5-32-580'))
    MaxMemoryPerShellMB = Get-Safely { [string](Get-Item WSMan:\localhost\Shell\MaxMemoryPerShellMB).Value }
    PluginMaxMemoryPerShellMB = Get-Safely { [string](Get-Item WSMan:\localhost\Plugin\microsoft.powershell\Quotas\MaxMemoryPerShellMB).Value }
    MaxEnvelopeSizekb = Get-Safely { [string](Get-Item WSMan:\localhost\MaxEnvelopeSizekb).Value }
    MaxProcessesPerShell = Get-Safely { [string](Get-Item WSMan:\localhost\Shell\MaxProcessesPerShell).Value }
}

$runRecords = New-Object System.Collections.ArrayList
for ($i = 0; $i -lt [Math]::Max(1, $Runs); $i++) { [void]$runRecords.Add((Invoke-Collection)) }

# -- pseudonymization (the rules of hyperv_exporter/sim/capture.py) ------------------------------------
$pseudo = @{
    Guids = New-Object 'System.Collections.Generic.Dictionary[string,string]'
    Names = New-Object 'System.Collections.Generic.Dictionary[string,string]'
    Kinds = New-Object 'System.Collections.Generic.Dictionary[string,int]'
    Values = New-Object 'System.Collections.Generic.Dictionary[string,string]'
    IPv4 = New-Object 'System.Collections.Generic.Dictionary[string,string]'
    IPv6 = New-Object 'System.Collections.Generic.Dictionary[string,string]'
}
$keepKvpKeys = @(
    'OSName', 'OSVersion', 'OSMajorVersion', 'OSMinorVersion', 'OSBuildNumber', 'OSPlatformId',
    'ServicePackMajor', 'ServicePackMinor', 'SuiteMask', 'ProductType', 'OSEditionId',
    'ProcessorArchitecture', 'IntegrationServicesVersion', 'CSDVersion', 'OSVendor',
    'OSDistributionName', 'OSDistributionData', 'OSKernelVersion'
)
$guidPattern = '[0-9A-Fa-f]{8}-(?:[0-9A-Fa-f]{4}-){3}[0-9A-Fa-f]{12}'

function Get-PseudoGuid([string]$Value) {
    $key = $Value.ToLowerInvariant()
    if (-not $pseudo.Guids.ContainsKey($key)) {
        $pseudo.Guids[$key] = '00000000-0000-4000-8000-{0:D12}' -f ($pseudo.Guids.Count + 1)
    }
    if ($Value -ceq $Value.ToUpperInvariant()) { return $pseudo.Guids[$key].ToUpperInvariant() }
    return $pseudo.Guids[$key]
}

function Get-PseudoName([string]$Value, [string]$Kind) {
    if (-not $pseudo.Names.ContainsKey($Value)) {
        $count = 1
        if ($pseudo.Kinds.ContainsKey($Kind)) { $count = $pseudo.Kinds[$Kind] + 1 }
        $pseudo.Kinds[$Kind] = $count
        $pseudo.Names[$Value] = '{0}-{1:D4}' -f $Kind, $count
    }
    return $pseudo.Names[$Value]
}

function Get-PseudoValue([string]$Value) {
    if (-not $pseudo.Values.ContainsKey($Value)) { $pseudo.Values[$Value] = 'value-{0:D4}' -f ($pseudo.Values.Count + 1) }
    return $pseudo.Values[$Value]
}

function Get-PseudoAddress([string]$Value) {
    $ip = $null
    $text = $Value.Trim()
    if (($text.Contains('.') -or $text.Contains(':')) -and [Net.IPAddress]::TryParse($text, [ref]$ip)) {
        $canonical = $ip.ToString()
        if ($ip.AddressFamily -eq [Net.Sockets.AddressFamily]::InterNetwork) {
            if (-not $pseudo.IPv4.ContainsKey($canonical)) {
                $n = $pseudo.IPv4.Count + 1
                $pseudo.IPv4[$canonical] = '198.{0}.{1}.{2}' -f (18 + [int][Math]::Floor($n / 65536)), ([int][Math]::Floor($n / 256) % 256), ($n % 256)
            }
            return $pseudo.IPv4[$canonical]
        }
        if (-not $pseudo.IPv6.ContainsKey($canonical)) {
            $n = $pseudo.IPv6.Count + 1
            if ($n -lt 65536) { $pseudo.IPv6[$canonical] = '2001:db8::{0:x}' -f $n }
            else { $pseudo.IPv6[$canonical] = '2001:db8::{0:x}:{1:x}' -f [int][Math]::Floor($n / 65536), ($n % 65536) }
        }
        return $pseudo.IPv6[$canonical]
    }
    return Get-PseudoValue $Value
}

function Get-PseudoKvpItem([string]$Item) {
    $name = [regex]::Match($Item, '<PROPERTY NAME="Name" TYPE="string"><VALUE>(.*?)</VALUE></PROPERTY>')
    $data = [regex]::Match($Item, '(<PROPERTY NAME="Data" TYPE="string"><VALUE>)(.*?)(</VALUE></PROPERTY>)')
    if (-not $name.Success -or -not $data.Success) {
        return '<pseudonymized: a KVP item not in the canonical CIM-XML layout was removed>'
    }
    $key = $name.Groups[1].Value
    $old = $data.Groups[2].Value
    $new = $old
    if ($old -and $keepKvpKeys -cnotcontains $key) {
        if ($key -ceq 'NetworkAddressIPv4' -or $key -ceq 'NetworkAddressIPv6') {
            $new = @($old.Split(';') | ForEach-Object { Get-PseudoAddress $_ }) -join ';'
        } else {
            $new = Get-PseudoValue $old
        }
    }
    $group = $data.Groups[2]
    return $Item.Substring(0, $group.Index) + $new + $Item.Substring($group.Index + $group.Length)
}

function Get-PseudoText([string]$Value) {
    $Value = [regex]::Replace($Value, $guidPattern, {
        param($m)
        if ($pseudo.Guids.ContainsKey($m.Value.ToLowerInvariant())) { Get-PseudoGuid $m.Value } else { $m.Value }
    })
    if ($pseudo.Names.ContainsKey($Value)) { return $pseudo.Names[$Value] }
    foreach ($old in @($pseudo.Names.Keys | Sort-Object -Property Length -Descending)) {
        if ($Value.Contains($old)) {
            $new = $pseudo.Names[$old]
            $Value = $Value.Replace("'$old'", "'$new'").Replace("`"$old`"", "`"$new`"")
        }
    }
    return $Value
}

function Protect-Value($Value, [bool]$InKvp) {
    if ($null -eq $Value) { return $null }
    if ($Value -is [Collections.IDictionary]) {
        $copy = New-Object 'System.Collections.Generic.Dictionary[string,object]'
        foreach ($key in @($Value.Keys)) { $copy[$key] = Protect-Value $Value[$key] ($InKvp -or $key -eq 'Kvp') }
        return $copy
    }
    if ($Value -is [string]) {
        if ($InKvp) { return Get-PseudoKvpItem $Value }
        return Get-PseudoText $Value
    }
    if ($Value -is [Collections.IEnumerable]) {
        $list = New-Object System.Collections.ArrayList
        foreach ($item in $Value) { [void]$list.Add((Protect-Value $item $InKvp)) }
        return , $list.ToArray()
    }
    return $Value
}

function Protect-Document([string]$Json) {
    # The collect.ps1 document with names, Ids and KVP values replaced; re-serialised by the same
    # serializer ConvertTo-Json uses on 5.1 (so <, >, &, ' are \u escapes as in the original).
    $doc = $serializer.DeserializeObject($Json)
    if ($doc -isnot [Collections.IDictionary]) { return '' }
    if ($doc['Host'] -is [Collections.IDictionary]) {
        if ($doc['Host']['ComputerName']) { [void](Get-PseudoName ([string]$doc['Host']['ComputerName']) 'HOST') }
        if ($doc['Host']['Cluster']) { [void](Get-PseudoName ([string]$doc['Host']['Cluster']) 'CLUSTER') }
    }
    foreach ($vm in @($doc['VMs'])) {
        if ($vm -isnot [Collections.IDictionary]) { continue }
        $id = [string]$vm['Id']
        if ($id -match "^\{?($guidPattern)\}?$") { [void](Get-PseudoGuid $Matches[1]) }
        if ($vm['Name']) { [void](Get-PseudoName ([string]$vm['Name']) 'vm') }
    }
    return $serializer.Serialize((Protect-Value $doc $false))
}

if ($Pseudonymize) {
    [void](Get-PseudoName $env:COMPUTERNAME 'HOST')
    foreach ($run in $runRecords) {
        if ($run.Stdout) {
            try { $run.Stdout = Protect-Document $run.Stdout }
            catch { $run.Stdout = ''; [void]$captureErrors.Add('pseudonymization failed; output removed: ' + $_.Exception.Message) }
        }
        $run.Stderr = Get-PseudoText $run.Stderr
    }
    $environment.ComputerName = Get-PseudoName $env:COMPUTERNAME 'HOST'
    $environment.Account = 'ACCOUNT'
    for ($i = 0; $i -lt $captureErrors.Count; $i++) { $captureErrors[$i] = Get-PseudoText ([string]$captureErrors[$i]) }
}

$capture = [ordered]@{
    Kind = 'hyperv-exporter-capture'
    CaptureVersion = 1
    Synthetic = $false
    Pseudonymized = [bool]$Pseudonymize
    Note = $Note
    Tool = $CaptureTool
    ScriptSha256 = $scriptHash
    CapturedAtTicks = [DateTime]::UtcNow.Ticks
    Environment = $environment
    Errors = $captureErrors.ToArray()
    Runs = $runRecords.ToArray()
}
[IO.File]::WriteAllText($OutFile, $serializer.Serialize($capture), (New-Object System.Text.UTF8Encoding $false))

foreach ($run in $runRecords) {
    '{0:N1} s, exit code {1}, {2:N0} bytes on the wire, peak memory {3:N0} MB' -f $run.Seconds, $run.ExitCode, $run.OutputBytes, ($run.PeakMemoryBytes / 1048576)
}
foreach ($e in $captureErrors) { Write-Warning $e }
"Capture written to $OutFile. Read it before you share it."
