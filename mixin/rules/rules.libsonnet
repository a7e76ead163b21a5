// Recording rules: windows_exporter's per-VM Hyper-V counters (CPU, network, disk) with the labels
// of this exporter's series, so that the two can be shown and joined side by side:
//   instance  the Hyper-V host, as the /probe job names it (windows_exporter's instance minus the port)
//   vm        the VM name, as hyperv_vm_info{vm} has it
// windows_exporter names VMs inside its performance-counter instance names; these rules take them
// out: "<VM>:Hv VP <n>" (already split into vm/core by windows_exporter; a "#<n>" suffix that
// Windows adds to duplicate names is dropped), "<VM>_Network Adapter_<GUIDs>", and the VHD file
// path ("\" shown as "-") of disks in a "Virtual Hard Disks" folder named "<VM>.vhdx" or, for
// checkpoints, "<VM>_<GUID>.avhdx" (Hyper-V's default names; other disks are not attributed).
local utils = import '../lib/utils.libsonnet';

local hostInstance(expr) =
  'label_replace(%s, "instance", "$1", "instance", "([^:]+)(?::[0-9]+)?")' % expr;

local perVm(expr) = 'sum by (instance, vm) (\n  %s\n)\n' % hostInstance(expr);

{
  prometheusRules+:: {
    groups+: [
      {
        name: 'hyperv-windows-exporter.rules',
        rules: [
          {
            // windows_exporter passes the "% Total Run Time" counter through in 100 ns ticks. The VM name
            // without a "#<n>" goes to a label of its own first: rewriting vm in place would make
            // two series of one core collide.
            record: 'instance_vm:windows_hyperv_vm_cpu_usage_cores:rate5m',
            expr: perVm(
              'label_replace(sum by (instance, vm_name) (label_replace(rate(windows_hyperv_hypervisor_virtual_processor_total_run_time_total{%s}[5m]), "vm_name", "$1", "vm", "(.+?)(?:#[0-9]+)?")) / 1e7, "vm", "$1", "vm_name", "(.*)")'
              % $._config.windowsExporterSelector
            ),
          },
          {
            record: 'instance_vm:windows_hyperv_vm_network_receive_bytes:rate5m',
            expr: perVm(
              'label_replace(rate(windows_hyperv_virtual_network_adapter_received_bytes_total{%s, adapter=~".+_Network Adapter_.*"}[5m]), "vm", "$1", "adapter", "(.+)_Network Adapter_.*")'
              % $._config.windowsExporterSelector
            ),
          },
          {
            record: 'instance_vm:windows_hyperv_vm_network_transmit_bytes:rate5m',
            expr: perVm(
              'label_replace(rate(windows_hyperv_virtual_network_adapter_sent_bytes_total{%s, adapter=~".+_Network Adapter_.*"}[5m]), "vm", "$1", "adapter", "(.+)_Network Adapter_.*")'
              % $._config.windowsExporterSelector
            ),
          },
          {
            record: 'instance_vm:windows_hyperv_vm_disk_read_bytes:rate5m',
            expr: perVm(
              'label_replace(rate(windows_hyperv_virtual_storage_device_bytes_read{%s, device=~".*Virtual Hard Disks-.+[.]a?vhdx?"}[5m]), "vm", "$1", "device", ".*Virtual Hard Disks-(.+?)(?:_[0-9A-Fa-f-]{36})?[.]a?vhdx?")'
              % $._config.windowsExporterSelector
            ),
          },
          {
            record: 'instance_vm:windows_hyperv_vm_disk_write_bytes:rate5m',
            expr: perVm(
              'label_replace(rate(windows_hyperv_virtual_storage_device_bytes_written{%s, device=~".*Virtual Hard Disks-.+[.]a?vhdx?"}[5m]), "vm", "$1", "device", ".*Virtual Hard Disks-(.+?)(?:_[0-9A-Fa-f-]{36})?[.]a?vhdx?")'
              % $._config.windowsExporterSelector
            ),
          },
        ],
      },
    ],
  },
} + {
  // The multi-site labels of _config.groupLabels, as in the alerts.
  prometheusRules+:: {
    groups: [
      group { rules: [rule { expr: utils.addGroupLabels(super.expr, $._config.groupLabels) } for rule in group.rules] }
      for group in super.groups
    ],
  },
}
