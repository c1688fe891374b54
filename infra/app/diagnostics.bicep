// What the Log Analytics workspace receives besides the app's telemetry: the storage account's blob, queue and
// table logs (StorageBlobLogs, StorageQueueLogs, StorageTableLogs: 403s, throttling, who wrote a poison queue),
// and the logs of both Event Grid topics (the uploads' system topic and the job-events topic: delivery and
// publish failures) in their own tables (Aeg*Logs).

@description('Log Analytics workspace the logs go to (the one Application Insights uses).')
param workspaceName string

@description('Storage account whose blob, queue and table services log.')
param storageAccountName string

@description('Event Grid system topic of the storage account (upload events).')
param systemTopicName string

@description('Event Grid custom topic of job-finished events.')
param jobEventsTopicName string

@description('Also log storage reads. Off by default: the queue triggers poll every queue (up to twice a second per instance when idle), so reads are most of the volume and cost; writes and deletes, where failures and poison messages show, are always logged.')
param logStorageReads bool = false

var storageLogs = [
  {
    category: 'StorageWrite'
    enabled: true
  }
  {
    category: 'StorageDelete'
    enabled: true
  }
  {
    category: 'StorageRead'
    enabled: logStorageReads
  }
]

// Every category each topic type has (azure-monitor reference, supported-logs): a system topic only delivers.
var systemTopicLogCategories = [
  'DeliveryFailures'
]
var customTopicLogCategories = [
  'DeliveryFailures'
  'PublishFailures'
  'DataPlaneRequests' // aggregated per minute: who published, how often, with which result
]

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' existing = {
  name: workspaceName
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' existing = {
  parent: storage
  name: 'default'
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' existing = {
  parent: storage
  name: 'default'
}

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' existing = {
  parent: storage
  name: 'default'
}

resource systemTopic 'Microsoft.EventGrid/systemTopics@2025-02-15' existing = {
  name: systemTopicName
}

resource jobEventsTopic 'Microsoft.EventGrid/topics@2025-02-15' existing = {
  name: jobEventsTopicName
}

resource blobLogs 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-workspace'
  scope: blobService
  properties: {
    workspaceId: workspace.id
    logs: storageLogs
  }
}

resource queueLogs 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-workspace'
  scope: queueService
  properties: {
    workspaceId: workspace.id
    logs: storageLogs
  }
}

resource tableLogs 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-workspace'
  scope: tableService
  properties: {
    workspaceId: workspace.id
    logs: storageLogs
  }
}

resource systemTopicLogs 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-workspace'
  scope: systemTopic
  properties: {
    workspaceId: workspace.id
    logAnalyticsDestinationType: 'Dedicated'
    logs: [for category in systemTopicLogCategories: {
      category: category
      enabled: true
    }]
  }
}

resource jobEventsTopicLogs 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-workspace'
  scope: jobEventsTopic
  properties: {
    workspaceId: workspace.id
    logAnalyticsDestinationType: 'Dedicated'
    logs: [for category in customTopicLogCategories: {
      category: category
      enabled: true
    }]
  }
}
