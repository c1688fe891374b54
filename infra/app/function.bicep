// The Function App: a Flex Consumption plan (one app per plan) and a Python 3.11 app with a system-assigned
// identity. The host, the deployment package and the app's own clients all reach storage through that identity.

@description('Function App name (also its host name).')
param name string

@description('Flex Consumption plan name.')
param planName string

@description('Azure region.')
param location string

@description('Tags for every resource; the app also gets the azd-service-name tag that azure.yaml deploys to.')
param tags object = {}

@description('azure.yaml service this app is (azd finds the app by this tag).')
param serviceName string

@description('Storage account of the host, the queues and the deployment package (created by storage.bicep).')
param storageAccountName string

@description('Blob container that holds the deployment package.')
param deploymentContainerName string

@description('Application Insights the host sends telemetry to, with Entra ID auth.')
param applicationInsightsName string

@description('Most instances per function scale group (docs/deploying.md: tied to the GeoCatalog call limit).')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int

@description('Memory of each instance.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('The app\'s own settings (GEOCATALOG_ENDPOINT, queue names, ...), added to the host settings below.')
param appSettings object

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

// Identity-based host storage: no connection string. With no __clientId the system-assigned identity is used.
// shared/settings.py reads the same AzureWebJobsStorage__accountName for the app's own clients.
// Telemetry (host.json "telemetryMode": "OpenTelemetry"): the host and the Python worker both export to this
// Application Insights. The connection string carries no secret (local auth is off); the authentication
// string makes both send as the system-assigned identity (Entra ID, Monitoring Metrics Publisher). With
// PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY the worker calls configure_azure_monitor() itself at start (the
// azure-monitor-opentelemetry distro) and the host leaves the worker's logs to it, so nothing arrives twice.
var hostSettings = {
  AzureWebJobsStorage__accountName: storage.name
  AzureWebJobsStorage__credential: 'managedidentity'
  APPLICATIONINSIGHTS_CONNECTION_STRING: appInsights.properties.ConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'Authorization=AAD'
  PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY: 'true'
}

// Every app setting; the host's own win over the app's.
var settings = union(appSettings, hostSettings)

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // checkov:skip=CKV_AZURE_225: Flex Consumption zone redundancy is offered in some regions only; the queues, not the instances, make the work durable
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    tier: 'FlexConsumption'
    name: 'FC1'
  }
  properties: {
    reserved: true
  }
}

resource app 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_222: azd and func publish deploy through the app's public SCM endpoint; this template has no VNet
  // checkov:skip=CKV_AZURE_78: FTP(S) is not supported on Flex Consumption (ftpsState is not a valid setting there)
  // checkov:skip=CKV_AZURE_17: no HTTP triggers (queue triggers only), so no client to ask for a certificate
  // checkov:skip=CKV_AZURE_67: no HTTP triggers (queue triggers only); the HTTP version serves no one
  // checkov:skip=CKV_AZURE_18: no HTTP triggers (queue triggers only); the HTTP version serves no one
  // checkov:skip=CKV_AZURE_213: no HTTP endpoint to health-check (queue triggers only)
  // checkov:skip=CKV_AZURE_212: Flex Consumption has no worker count; instances scale per function up to maximumInstanceCount
  name: name
  location: location
  tags: union(tags, { 'azd-service-name': serviceName })
  kind: 'functionapp,linux'
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    siteConfig: {
      minTlsVersion: '1.2'
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'SystemAssignedIdentity'
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
  }
}

// The app settings, as one child resource (the AVM site module's shape): 'appsettings' replaces them all.
resource appSettingsConfig 'Microsoft.Web/sites/config@2024-04-01' = {
  // checkov:skip=CKV_AZURE_13: false positive: this is the 'appsettings' config, not the 'web' site config the check reads; no HTTP triggers to authenticate
  // checkov:skip=CKV_AZURE_63: false positive: 'appsettings', not the 'web' site config; no HTTP triggers, so no HTTP logs
  // checkov:skip=CKV_AZURE_65: false positive: 'appsettings', not the 'web' site config; no HTTP triggers, so no error pages
  // checkov:skip=CKV_AZURE_66: false positive: 'appsettings', not the 'web' site config; no HTTP triggers, so no request tracing
  // checkov:skip=CKV_AZURE_80: false positive: 'appsettings', not the 'web' site config; a Python app has no .NET Framework version
  // checkov:skip=CKV_AZURE_88: false positive: 'appsettings', not the 'web' site config; Flex Consumption keeps the package in blob storage, not Azure Files
  // checkov:skip=CKV_AZURE_222: false positive: 'appsettings', not the 'web' site config; the app itself is skipped with its reason above
  parent: app
  name: 'appsettings'
  properties: settings
}

// Basic-auth (user name and password) publishing to the SCM and FTP endpoints off: deployments authenticate
// with Entra ID (azd posts the package to /api/publish with a bearer token).
resource scmBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: app
  name: 'scm'
  properties: {
    allow: false
  }
}

resource ftpBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: app
  name: 'ftp'
  properties: {
    allow: false
  }
}

output name string = app.name
output principalId string = app.identity.principalId
output defaultHostName string = app.properties.defaultHostName
