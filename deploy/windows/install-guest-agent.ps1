<#
.SYNOPSIS
    Installs hyperv-guest-agent in a Windows Hyper-V guest and runs it at startup.

.DESCRIPTION
    Creates a Python virtual environment, installs the agent into it, and registers a scheduled
    task that starts the agent at boot as NT AUTHORITY\LOCAL SERVICE (no administrator rights at
    run time) and restarts it if it stops. A scheduled task needs nothing besides Windows; a
    service wrapper (WinSW, NSSM) works as well, see docs/deployment.md.

    -Mode Textfile (default) writes hyperv_guest.prom into windows_exporter's textfile directory
    every minute: no new port, windows_exporter publishes the metrics (enable its textfile
    collector). -Mode Http serves /metrics on TCP -Port (10021) and opens that port in the
    Windows firewall for the Domain and Private profiles.

    Run from an elevated PowerShell. Needs Python 3.11 or newer installed for all users (py.exe).

.EXAMPLE
    .\install-guest-agent.ps1 -Package C:\temp\hyperv_exporter-0.1.0-py3-none-any.whl

.EXAMPLE
    .\install-guest-agent.ps1 -Mode Http -Port 10021
#>
[CmdletBinding()]
param(
    [ValidateSet('Textfile', 'Http')]
    [string]$Mode = 'Textfile',
    # A wheel file, or a name pip can resolve from your package index.
    [string]$Package = 'hyperv-exporter',
    [string]$InstallDir = (Join-Path $env:ProgramFiles 'hyperv-guest-agent'),
    [string]$TextfileDir = (Join-Path $env:ProgramFiles 'windows_exporter\textfile_inputs'),
    [ValidateRange(1, 65535)]
    [int]$Port = 10021,
    [string]$TaskName = 'hyperv-guest-agent'
)

$ErrorActionPreference = 'Stop'

$principal = [Security.Principal.WindowsPrincipal][Security.Principal.WindowsIdentity]::GetCurrent()
if (-not $principal.IsInRole([Security.Principal.WindowsBuiltInRole]::Administrator)) {
    throw 'Run this script from an elevated PowerShell (it installs into Program Files and registers a task).'
}

# 1. The agent in its own virtual environment.
$python = Join-Path $InstallDir 'Scripts\python.exe'
if (-not (Test-Path $python)) {
    & py -3 -m venv $InstallDir
    if ($LASTEXITCODE -ne 0) { throw "py -3 -m venv failed ($LASTEXITCODE); is Python 3.11+ installed for all users?" }
}
& $python -m pip install --upgrade $Package
if ($LASTEXITCODE -ne 0) { throw "pip install $Package failed ($LASTEXITCODE)" }
$agent = Join-Path $InstallDir 'Scripts\hyperv-guest-agent.exe'

# 2. Where the metrics go.
if ($Mode -eq 'Textfile') {
    if (-not (Test-Path $TextfileDir)) {
        throw "$TextfileDir does not exist: install windows_exporter with the textfile collector, or pass -TextfileDir"
    }
    # LOCAL SERVICE may create and replace files there (the agent writes a temporary file, then renames it).
    & icacls.exe $TextfileDir /grant '*S-1-5-19:(OI)(CI)M' | Out-Null
    if ($LASTEXITCODE -ne 0) { throw "icacls failed on $TextfileDir ($LASTEXITCODE)" }
    $arguments = @('--textfile', "`"$(Join-Path $TextfileDir 'hyperv_guest.prom')`"", '--textfile.interval', '60s')
}
else {
    $arguments = @("--web.listen-address=:$Port")
    $rule = Get-NetFirewallRule -Name $TaskName -ErrorAction SilentlyContinue
    if ($null -eq $rule) {
        New-NetFirewallRule -Name $TaskName -DisplayName 'Hyper-V guest agent (Prometheus)' -Direction Inbound `
            -Protocol TCP -LocalPort $Port -Action Allow -Profile @('Domain', 'Private') | Out-Null
    }
}

# 3. Started at boot, restarted when it stops, never stopped by the task scheduler's 72-hour limit.
$action = New-ScheduledTaskAction -Execute $agent -Argument ($arguments -join ' ') -WorkingDirectory $InstallDir
$trigger = New-ScheduledTaskTrigger -AtStartup
$settings = New-ScheduledTaskSettingsSet -ExecutionTimeLimit ([TimeSpan]::Zero) -RestartCount 999 `
    -RestartInterval (New-TimeSpan -Minutes 1) -StartWhenAvailable -AllowStartIfOnBatteries -DontStopIfGoingOnBatteries
$runAs = New-ScheduledTaskPrincipal -UserId 'NT AUTHORITY\LOCAL SERVICE' -LogonType ServiceAccount -RunLevel Limited
Register-ScheduledTask -TaskName $TaskName -Action $action -Trigger $trigger -Settings $settings -Principal $runAs `
    -Description 'hyperv-guest-agent: clock offset, integration services and KVP for Prometheus' -Force | Out-Null
Start-ScheduledTask -TaskName $TaskName

Write-Host "hyperv-guest-agent installed in $InstallDir and started as scheduled task '$TaskName' ($Mode mode)."
if ($Mode -eq 'Http') {
    Write-Host "Check: Invoke-WebRequest -UseBasicParsing http://localhost:$Port/metrics"
}
else {
    Write-Host "Check: Get-Content '$(Join-Path $TextfileDir 'hyperv_guest.prom')' (written within a minute)"
}
