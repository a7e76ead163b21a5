<#
.SYNOPSIS
    Registers, updates, checks or removes the read-only JEA endpoint "HyperVExporter" that
    hyperv-exporter collects through.

.DESCRIPTION
    The endpoint is a PowerShell session configuration of type RestrictedRemoteServer (no-language
    mode) whose only visible command is Get-HyperVExporterReport. That command's body is the
    exporter's collect.ps1, read from -CollectScript: collect.ps1 stays the one source of the
    collection logic, and the exporter warns when an endpoint's copy is not its own
    (hyperv_host_collection_script_outdated).

    Connecting users run as a temporary virtual account whose only group is Hyper-V Administrators
    (not Administrators). Who may connect is the group named by -Group (RoleDefinitions). The
    monitoring account then needs no local admin rights and no Hyper-V Administrators membership:
    it can run the collection and nothing else.

    What each action does:
      -Register    writes the role capability (HyperVExporterReader.psrc, in the module folder
                   HyperVExporter under Program Files) and the session configuration file, checks
                   the latter with Test-PSSessionConfigurationFile and registers it. REGISTERING
                   RESTARTS THE WinRM SERVICE: every PowerShell remoting session on the host ends,
                   including running DSC configurations. It asks before doing so (-Confirm:$false
                   skips the question).
      -Update      rewrites only the role capability from -CollectScript (after an exporter
                   upgrade). No WinRM restart: new sessions get the new copy. The exporter keeps
                   its runspace open across probes, so it sees the new copy once that runspace is
                   reopened (restart the exporter, or wait for the endpoint's idle timeout).
      -Test        (the default) checks the registration, the role capability and its copy of
                   collect.ps1; with -Username, the commands that account gets; with -Credential,
                   runs the collection through the endpoint as that account.
      -Unregister  removes the session configuration (restarts WinRM too) and the module folder.

    Transcripts are off: a transcript records every command's output, and a monitoring call every
    15-30 seconds that returns hundreds of kilobytes fills a disk. Turn them on with
    -TranscriptDirectory; PowerShell script block logging (event 4104) and WinRM's event 193 are the
    lighter audit trail (docs/security.md).

    Needs Windows PowerShell 5.1: built into Windows Server 2016 and later; Windows Server 2012 R2
    and 2012 need Windows Management Framework (WMF) 5.1 installed first. Run from an elevated
    PowerShell on each Hyper-V host.

.PARAMETER Group
    The group (or account) whose members may use the endpoint: 'CORP\HyperV-Monitoring', or a local
    group by name ('HyperV-Monitoring' means "$env:COMPUTERNAME\HyperV-Monitoring"). Put only the
    monitoring account in it.

.PARAMETER CollectScript
    The collect.ps1 of the exporter release that will probe this host. Default: the copy in this
    repository checkout (..\..\exporter\hyperv_exporter\host\collect.ps1 from this script).

.PARAMETER TranscriptDirectory
    Turns session transcripts on, written to this directory (by Local System; restrict its ACL).

.EXAMPLE
    .\HyperVExporterEndpoint.ps1 -Register -Group 'CORP\HyperV-Monitoring'

.EXAMPLE
    .\HyperVExporterEndpoint.ps1 -Update -CollectScript C:\temp\collect.ps1

.EXAMPLE
    .\HyperVExporterEndpoint.ps1 -Test -Username 'CORP\svc-hyperv-monitor' -Credential (Get-Credential 'CORP\svc-hyperv-monitor')

.EXAMPLE
    .\HyperVExporterEndpoint.ps1 -Unregister
#>
[CmdletBinding(DefaultParameterSetName = 'Test', SupportsShouldProcess = $true, ConfirmImpact = 'High')]
param(
    [Parameter(Mandatory = $true, ParameterSetName = 'Register')]
    [switch]$Register,

    [Parameter(Mandatory = $true, ParameterSetName = 'Update')]
    [switch]$Update,

    [Parameter(ParameterSetName = 'Test')]
    [switch]$Test,

    [Parameter(Mandatory = $true, ParameterSetName = 'Unregister')]
    [switch]$Unregister,

    [Parameter(Mandatory = $true, ParameterSetName = 'Register')]
    [string]$Group,

    [Parameter(ParameterSetName = 'Register')]
    [Parameter(ParameterSetName = 'Update')]
    [Parameter(ParameterSetName = 'Test')]
    [string]$CollectScript = (Join-Path $PSScriptRoot '..\..\exporter\hyperv_exporter\host\collect.ps1'),

    [Parameter(ParameterSetName = 'Register')]
    [string]$TranscriptDirectory,

    [Parameter(ParameterSetName = 'Test')]
    [string]$Username,

    [Parameter(ParameterSetName = 'Test')]
    [System.Management.Automation.PSCredential]$Credential
)

$ErrorActionPreference = 'Stop'
Set-StrictMode -Version 3
$ScriptName = $MyInvocation.MyCommand.Name

# Names the exporter relies on (docs/configuration.md: winrm.configuration_name; CONTRACTS C1).
$EndpointName = 'HyperVExporter'
$CommandName = 'Get-HyperVExporterReport'
$RoleName = 'HyperVExporterReader'
$ModuleName = 'HyperVExporter'
$ModuleBase = Join-Path $env:ProgramFiles "WindowsPowerShell\Modules\$ModuleName"
$RoleFile = Join-Path $ModuleBase "RoleCapabilities\$RoleName.psrc"
$SessionFile = Join-Path $ModuleBase "$EndpointName.pssc"
# The stamp line in collect.ps1; the exporter's host/script.py uses the same pattern (HASH_LINE).
$HashLinePattern = '(?m)^\$scriptHash = ''[0-9a-f]*''$'
# The same line inside the role capability file, where the function body is indented: captures the hash.
$RoleStampPattern = '(?m)^\s*\$scriptHash = ''([0-9a-f]*)'''
$VersionLinePattern = '(?m)^\$scriptVersion = ''([^'']*)''$'
# In a .NET replacement text "$$" is a literal "$".
$UnstampedLine = "`$`$scriptHash = ''"
# JEA's restricted remote server session always offers these (session-configurations.md).
$DefaultCommands = @('Clear-Host', 'Exit-PSSession', 'Get-Command', 'Get-FormatData', 'Get-Help', 'Measure-Object', 'Out-Default', 'Select-Object')
# Well-known groups far too broad to be allowed into the endpoint.
$BroadSids = @('S-1-1-0', 'S-1-5-11', 'S-1-5-32-545', 'S-1-5-4', 'S-1-5-2')

function Assert-Prerequisite {
    if ($PSVersionTable.PSVersion -lt [version]'5.1') {
        throw ("JEA needs Windows PowerShell 5.1; this is $($PSVersionTable.PSVersion). On Windows Server " +
            '2012 R2 and 2012 install Windows Management Framework 5.1 first (2016 and later have it).')
    }
    $principal = New-Object Security.Principal.WindowsPrincipal ([Security.Principal.WindowsIdentity]::GetCurrent())
    if (-not $principal.IsInRole([Security.Principal.WindowsBuiltInRole]::Administrator)) {
        throw 'Run this script from an elevated PowerShell (as Administrator).'
    }
}

function Get-HyperVAdministratorsName {
    # S-1-5-32-578 is BUILTIN\Hyper-V Administrators; its name is localized ("Hyper-V-Administratoren").
    $account = (New-Object Security.Principal.SecurityIdentifier 'S-1-5-32-578').Translate([Security.Principal.NTAccount])
    return $account.Value.Split('\')[-1]
}

function Resolve-Group([string]$Name) {
    # RoleDefinitions need DOMAIN\name or COMPUTER\name: never localhost or a wildcard.
    if ($Name -notlike '*\*') { $Name = "$env:COMPUTERNAME\$Name" }
    try {
        $sid = (New-Object Security.Principal.NTAccount $Name).Translate([Security.Principal.SecurityIdentifier]).Value
    } catch {
        throw "Cannot resolve '$Name' to an account or group: $($_.Exception.Message)"
    }
    if ($BroadSids -contains $sid -or $sid -like 'S-1-5-21-*-513') {
        throw "'$Name' ($sid) would let nearly everyone use the endpoint; name a group that holds only the monitoring account."
    }
    if ($sid -eq 'S-1-5-32-544') {
        Write-Warning "'$Name' is Administrators: they need no JEA endpoint, and the monitoring account should not be one."
    }
    return $Name
}

function ConvertTo-CanonicalText([string]$Text) {
    # As host/script.py canonical_text: no BOM, LF line ends, the hash stamp emptied.
    $Text = $Text.TrimStart([char]0xFEFF).Replace("`r`n", "`n")
    return [regex]::Replace($Text, $HashLinePattern, $UnstampedLine)
}

function Get-TextHash([string]$Text) {
    $sha = [Security.Cryptography.SHA256]::Create()
    try {
        $bytes = $sha.ComputeHash((New-Object Text.UTF8Encoding $false).GetBytes((ConvertTo-CanonicalText $Text)))
    } finally {
        $sha.Dispose()
    }
    return -join ($bytes | ForEach-Object { $_.ToString('x2') })
}

function Read-CollectScript([string]$Path) {
    # Returns the script text with its hash stamped in, plus the version and the hash.
    if (-not (Test-Path -LiteralPath $Path -PathType Leaf)) {
        throw ("collect.ps1 not found at '$Path'. Copy it from the exporter release that will probe this host " +
            '(exporter/hyperv_exporter/host/collect.ps1 in its source, or the installed package) and pass -CollectScript.')
    }
    $text = ConvertTo-CanonicalText ([IO.File]::ReadAllText((Resolve-Path -LiteralPath $Path).ProviderPath, [Text.Encoding]::UTF8))
    if ([regex]::Matches($text, $HashLinePattern).Count -ne 1) {
        throw "'$Path' is not hyperv-exporter's collect.ps1 (no `$scriptHash line)."
    }
    $errors = $null
    $null = [Management.Automation.Language.Parser]::ParseInput($text, [ref]$null, [ref]$errors)
    if ($errors) { throw "'$Path' does not parse: $($errors[0].Message)" }
    $hash = Get-TextHash $text
    $version = [regex]::Match($text, $VersionLinePattern).Groups[1].Value
    return [pscustomobject]@{
        Text = [regex]::Replace($text, $HashLinePattern, "`$`$scriptHash = '$hash'")
        Version = $version
        Hash = $hash
    }
}

function Get-RequiredModule([string]$Text) {
    # JEA turns module autoloading off, so every module whose commands collect.ps1 calls is imported
    # by the role capability (Microsoft's advice in PowerShell/JEA#42). Found from the script's AST, so
    # a cmdlet added to collect.ps1 needs no change here.
    $ast = [Management.Automation.Language.Parser]::ParseInput($Text, [ref]$null, [ref]$null)
    $own = @($ast.FindAll({ param($n) $n -is [Management.Automation.Language.FunctionDefinitionAst] }, $true) | ForEach-Object { $_.Name })
    $names = @($ast.FindAll({ param($n) $n -is [Management.Automation.Language.CommandAst] }, $true) |
        ForEach-Object { $_.GetCommandName() } | Where-Object { $_ -and $own -notcontains $_ } | Sort-Object -Unique)
    $modules = New-Object System.Collections.Generic.List[string]
    foreach ($name in $names) {
        $command = Get-Command -Name $name -CommandType @('Cmdlet', 'Function') -ErrorAction SilentlyContinue | Select-Object -First 1
        if ($null -eq $command) {
            Write-Warning "collect.ps1 calls $name, which is not installed here; its section will report an error."
        } elseif ($command.ModuleName -and $command.ModuleName -ne 'Microsoft.PowerShell.Core' -and -not $modules.Contains($command.ModuleName)) {
            $modules.Add($command.ModuleName)
        }
    }
    return , $modules.ToArray()
}

function Write-RoleCapability($Collect) {
    $modules = Get-RequiredModule $Collect.Text
    $null = New-Item -ItemType Directory -Force -Path (Split-Path $RoleFile)
    $manifest = Join-Path $ModuleBase "$ModuleName.psd1"
    $moduleVersion = [version]'0.0.0'
    $null = [version]::TryParse($Collect.Version, [ref]$moduleVersion)
    New-ModuleManifest -Path $manifest -ModuleVersion $moduleVersion -Author 'hyperv-exporter' `
        -Description "Holds the $RoleName role capability of the $EndpointName JEA endpoint (collect.ps1 $($Collect.Version))." `
        -FunctionsToExport @() -CmdletsToExport @() -VariablesToExport @() -AliasesToExport @()
    # FunctionDefinitions bodies run in full language mode although the session is no-language
    # (role-capabilities.md), so collect.ps1 runs unchanged. VisibleFunctions makes it the only command.
    $role = @{
        Path = $RoleFile
        Description = "hyperv-exporter: read-only collection (collect.ps1 $($Collect.Version), sha256 $($Collect.Hash))"
        ModulesToImport = $modules
        VisibleFunctions = $CommandName
        FunctionDefinitions = @{ Name = $CommandName; ScriptBlock = [ScriptBlock]::Create($Collect.Text) }
    }
    New-PSRoleCapabilityFile @role
    Write-Host "Role capability $RoleFile`: $CommandName from collect.ps1 $($Collect.Version) (sha256 $($Collect.Hash.Substring(0, 12))), modules $($modules -join ', ')."
}

function Register-Endpoint {
    Assert-Prerequisite
    $members = Resolve-Group $Group
    $collect = Read-CollectScript $CollectScript
    $hyperVAdmins = Get-HyperVAdministratorsName
    Write-RoleCapability $collect
    $session = @{
        Path = $SessionFile
        SessionType = 'RestrictedRemoteServer'
        Description = 'hyperv-exporter: read-only Hyper-V collection (deploy/windows/HyperVExporterEndpoint.ps1)'
        RunAsVirtualAccount = $true
        # Only this group: the virtual account is then not in Administrators (session-configurations.md).
        RunAsVirtualAccountGroups = $hyperVAdmins
        RoleDefinitions = @{ $members = @{ RoleCapabilities = $RoleName } }
    }
    if ($TranscriptDirectory) {
        Write-Warning "Transcripts record every collection's output (hundreds of KB per probe): watch the disk under $TranscriptDirectory."
        $null = New-Item -ItemType Directory -Force -Path $TranscriptDirectory
        $session.TranscriptDirectory = $TranscriptDirectory
    }
    New-PSSessionConfigurationFile @session
    if (-not (Test-PSSessionConfigurationFile -Path $SessionFile)) {
        throw "Test-PSSessionConfigurationFile rejects $SessionFile (run it with -Verbose to see why)."
    }
    $action = 'Register-PSSessionConfiguration: RESTARTS the WinRM service and ends every PowerShell remoting session on this host'
    if (-not $PSCmdlet.ShouldProcess($EndpointName, $action)) { return }
    Write-Warning "Registering $EndpointName restarts WinRM: remoting sessions on $env:COMPUTERNAME end now."
    if (Get-PSSessionConfiguration -Name $EndpointName -ErrorAction SilentlyContinue) {
        Unregister-PSSessionConfiguration -Name $EndpointName -Force -NoServiceRestart
    }
    $null = Register-PSSessionConfiguration -Name $EndpointName -Path $SessionFile -Force
    Write-Host "Registered $EndpointName for $members; the virtual account is in '$hyperVAdmins' only."
    Write-Host "Exporter module: winrm: {protocol: psrp, configuration_name: $EndpointName}. Check with: .\$ScriptName -Test -Username <account>"
}

function Update-Endpoint {
    Assert-Prerequisite
    if (-not (Get-PSSessionConfiguration -Name $EndpointName -ErrorAction SilentlyContinue)) {
        throw "$EndpointName is not registered; use -Register."
    }
    if ($PSCmdlet.ShouldProcess($RoleFile, "Replace $CommandName with $CollectScript")) {
        Write-RoleCapability (Read-CollectScript $CollectScript)
        Write-Host 'New sessions run the new copy; no WinRM restart. The exporter picks it up when it reopens its runspace.'
    }
}

function Unregister-Endpoint {
    Assert-Prerequisite
    $action = 'Unregister-PSSessionConfiguration: RESTARTS the WinRM service and ends every PowerShell remoting session on this host'
    if (-not $PSCmdlet.ShouldProcess($EndpointName, $action)) { return }
    if (Get-PSSessionConfiguration -Name $EndpointName -ErrorAction SilentlyContinue) {
        Write-Warning "Unregistering $EndpointName restarts WinRM: remoting sessions on $env:COMPUTERNAME end now."
        Unregister-PSSessionConfiguration -Name $EndpointName -Force
    }
    if (Test-Path -LiteralPath $ModuleBase) { Remove-Item -LiteralPath $ModuleBase -Recurse -Force }
    Write-Host "Removed $EndpointName and $ModuleBase."
}

function Test-Endpoint {
    Assert-Prerequisite
    $results = New-Object System.Collections.Generic.List[object]
    function Add-Result([string]$Check, [bool]$Ok, [string]$Detail) {
        $results.Add([pscustomobject]@{ Check = $Check; Ok = $Ok; Detail = $Detail })
    }

    $config = Get-PSSessionConfiguration -Name $EndpointName -ErrorAction SilentlyContinue
    Add-Result 'registered' ($null -ne $config) $(if ($config) { "permission: $($config.Permission)" } else { 'run -Register' })
    if ($config) {
        $properties = $config.PSObject.Properties.Name
        $type = if ($properties -contains 'SessionType') { [string]$config.SessionType } else { '' }
        Add-Result 'no-language session' ($type -eq 'RestrictedRemoteServer') "SessionType $type"
        $groups = if ($properties -contains 'RunAsVirtualAccountGroups') { @($config.RunAsVirtualAccountGroups) } else { @() }
        $expected = Get-HyperVAdministratorsName
        Add-Result 'virtual account groups' (($groups.Count -eq 1) -and ($groups[0] -eq $expected)) "RunAsVirtualAccountGroups: $($groups -join ', ') (expected '$expected' only)"
        $transcripts = if ($properties -contains 'TranscriptDirectory') { [string]$config.TranscriptDirectory } else { '' }
        Add-Result 'transcripts' $true $(if ($transcripts) { "on: $transcripts (watch the disk)" } else { 'off' })
    }

    $roleText = if (Test-Path -LiteralPath $RoleFile) { [IO.File]::ReadAllText($RoleFile) } else { $null }
    Add-Result 'role capability' ($null -ne $roleText) $RoleFile
    if ($null -ne $roleText) {
        $stamp = [regex]::Match($roleText, $RoleStampPattern)
        $theirs = if ($stamp.Success) { $stamp.Groups[1].Value } else { '' }
        if (Test-Path -LiteralPath $CollectScript) {
            $ours = (Read-CollectScript $CollectScript).Hash
            Add-Result 'collect.ps1 up to date' ($theirs -eq $ours) "endpoint sha256 $theirs, $CollectScript sha256 $ours (-Update replaces it)"
        } else {
            Add-Result 'collect.ps1 up to date' $true "endpoint sha256 $theirs (no -CollectScript to compare with)"
        }
    }

    if ($Username) {
        $visible = @(Get-PSSessionCapability -ConfigurationName $EndpointName -Username $Username |
            Where-Object { $_.CommandType -ne 'Alias' } | ForEach-Object { $_.Name })
        $extra = @($visible | Where-Object { $DefaultCommands -notcontains $_ -and $_ -ne $CommandName })
        $has = $visible -contains $CommandName
        Add-Result "commands of $Username" ($has -and $extra.Count -eq 0) $(if (-not $has) { "no $CommandName: $Username is not in the role's group" } elseif ($extra) { "also visible: $($extra -join ', ')" } else { "$CommandName only (and JEA's defaults)" })
    }

    if ($Credential) {
        try {
            # A single command with constant arguments: the only kind of pipeline a no-language session runs.
            $json = Invoke-Command -ComputerName $env:COMPUTERNAME -ConfigurationName $EndpointName -Credential $Credential -ScriptBlock { Get-HyperVExporterReport -Collectors 'vm' }
            $doc = ($json -join '') | ConvertFrom-Json
            $vmErrors = if ($doc.Sections.vm.Error) { "; vm section failed: $($doc.Sections.vm.Error)" } else { '' }
            Add-Result "collection as $($Credential.UserName)" (-not $doc.Sections.vm.Error) "$(@($doc.VMs).Count) VMs, collect.ps1 $($doc.ScriptVersion)$vmErrors"
        } catch {
            Add-Result "collection as $($Credential.UserName)" $false $_.Exception.Message
        }
    }

    $results | Format-Table -AutoSize -Wrap | Out-String -Width 200 | Write-Host
    if (@($results | Where-Object { -not $_.Ok }).Count -gt 0) { exit 1 }
}

switch ($PSCmdlet.ParameterSetName) {
    'Register' { Register-Endpoint }
    'Update' { Update-Endpoint }
    'Unregister' { Unregister-Endpoint }
    default { Test-Endpoint }
}
